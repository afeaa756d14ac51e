"""Attention variants side by side: latency, energy, DRAM traffic and on-chip footprint vs sequence length.

:func:`compare_attention` costs every requested attention cascade of the registry (the dense ``attention-*``
forms and the variants of :mod:`workloads.variants`) at each sequence length, for one model shape of the zoo
(:mod:`workloads.llm`: heads, K/V heads, head dim), on one target:

* a **GPU or edge device** (``device=``): the kernel model of :func:`simulator.kernels.variants.predict_variant`
  (a fused tile program lowered from the cascade, masks skip key tiles; decode and multi-pass cascades use the
  decode and unfused kernels). Energy is not modelled on devices. Footprint: the shared memory the fused
  kernel's resident CTAs hold (tile bytes x CTAs per SM x SMs in use).
* a **spatial-array architecture** (``arch=``): the cascade-level mapper of :mod:`mappers.cascade_search`:
  :func:`~mappers.cascade_search.search_fused` for one-pass cascades, :func:`~mappers.cascade_search.search_passes`
  for multi-pass ones; latency, energy and DRAM bytes are the best design's :class:`~simulator.cost.CascadeCost`,
  the footprint its largest global-buffer occupancy.

Each row carries the cascade's pass count over M (:func:`einsum.analysis.pass_analysis`) and the ceiling that
bound it (GPU: ``tensor``, ``sfu``, ``fma``, ``smem``, ``l2``, ``memory``, ``launch``; arrays: the busiest array
or ``memory``). Shapes: prefill variants run P = M = seq; decode variants one new query against seq cached keys.
``gqa`` uses the model's K/V heads (the registry's group of up to 4 query heads per K/V head on a model without
GQA), decode variants the model's; the other cascades read K/V as their text declares (one K/V head per query
head, MQA's one, MLA's shared latent). Variant parameters are the registry's defaults unless given. A variant
that cannot run at a length (a score matrix larger than DRAM, a shape its blocks do not divide, no mapping on
the array) gets a row with the reason instead of numbers.

>>> study = compare_attention(device="h100-sxm", model="llama3-8b", seqs=[4096], variants=["gqa", "moba"])
>>> [(r.variant, r.bound) for r in study.rows]
[('gqa', 'tensor'), ('moba', 'tensor')]
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import workloads
from einsum.analysis import pass_analysis
from einsum.errors import AttnscopeError, ShapeError
from workloads.models import get_model
from workloads.registry import parse_size

__all__ = ["COLUMNS", "AttentionComparison", "ComparisonRow", "attention_variants", "compare_attention",
           "parse_seqs", "write_comparison"]  # fmt: skip

DEFAULT_SEQS = "1K,4K,16K,64K,256K,1M"

COLUMNS = (
    "variant", "seq", "passes", "kernel", "latency_s", "energy_pj", "dram_bytes", "footprint_bytes", "bound",
    "tflops", "seq_q", "seq_kv", "kv_heads", "params", "status", "spilled_bytes",
)  # fmt: skip
"""CSV columns, in order. ``status`` is ``ok``, ``infeasible: ...`` (a design that does not fit: which level, by
how much; its row has no latency, energy or traffic) or why there are no numbers. ``spilled_bytes``: on arrays,
the bytes of an overflowing buffer's accesses that go to DRAM instead (0: it fits; part of dram_bytes); the
footprint of a spilling design is the buffer's capacity."""


@dataclass(frozen=True)
class ComparisonRow:
    """One variant at one sequence length. Times in s, energy in pJ, traffic and footprint in bytes."""

    variant: str
    seq: int
    passes: int
    kernel: str  # GPU kernel, or the spatial design's description
    latency_s: float | None
    energy_pj: float | None  # spatial arrays only
    dram_bytes: float | None
    footprint_bytes: float | None
    bound: str
    tflops: float | None  # GPU only
    seq_q: int
    seq_kv: int
    kv_heads: int | None
    params: str  # the variant's parameters, "k=v;..."
    status: str
    spilled_bytes: float | None = None  # spatial arrays only: spilled to DRAM (module docstring of COLUMNS)

    @property
    def ok(self) -> bool:
        return self.latency_s is not None


@dataclass(frozen=True)
class AttentionComparison:
    """The rows of one comparison and what they were computed for."""

    target: str
    target_kind: str  # device | arch
    model: str
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    seqs: tuple[int, ...]
    variants: tuple[str, ...]
    rows: tuple[ComparisonRow, ...]
    source: str  # where the target's figures come from
    seconds: float  # wall time of the study
    notes: tuple[str, ...] = field(default=())
    native: str = ""
    """The registered variant the model's own attention is (:attr:`workloads.model_shape.ModelShape.attention_kind`)."""
    direction: str = "fwd"
    """``fwd``, ``bwd`` or ``fwd+bwd`` (:func:`mappers.direction.map_direction`)."""


def attention_variants() -> tuple[str, ...]:
    """The registered attention cascades (tag ``attention``), in registry order."""
    return tuple(n for n, e in workloads.CASCADES.items() if "attention" in e.tags)


def parse_seqs(text: str) -> tuple[int, ...]:
    """``1K,4K,1M`` -> (1024, 4096, 1048576); K = 2^10, M = 2^20."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ShapeError(f"--seq {text!r}: give comma-separated lengths, e.g. {DEFAULT_SEQS}")
    return tuple(parse_size(x, f"--seq item {x!r}") for x in items)


def _choose_variants(variants: Sequence[str] | None) -> tuple[str, ...]:
    """Registered attention cascades by name, or ``.einsum`` files by path (checked by loading them)."""
    from workloads.cases import load_workload

    valid = attention_variants()
    if not variants:
        return valid
    bad = [v for v in variants if v not in workloads.CASCADES and not v.endswith(".einsum")]
    if bad:
        raise AttnscopeError(
            f"unknown variant(s) {', '.join(bad)}; valid variants: {', '.join(valid)} (or .einsum files)"
        )
    for v in variants:
        load_workload(v)  # a file that does not parse is the user's error, before any costing
    return tuple(dict.fromkeys(variants))


@cache
def _passes(name: str) -> int:
    from workloads.cases import load_workload

    cascade = load_workload(name).cascade
    return pass_analysis(cascade, "M").passes if "M" in cascade.ranks else 1


def _params_text(params: Mapping[str, float]) -> str:
    return ";".join(f"{k}={v:g}" for k, v in sorted(params.items()))


def _row(case: Any, target: Any, name: str, seq: int, direction: str = "fwd") -> ComparisonRow:
    """One (variant, length) through the pipeline: :func:`attnscope.api.evaluate_case` (a backward or training
    direction: :func:`mappers.direction.map_direction`)."""
    from attnscope.api import evaluate_case

    if direction == "fwd":
        d = evaluate_case(case, target)
    else:
        from mappers.direction import map_direction

        d = map_direction(case, target, direction)
    device = d.target_kind == "device"
    params = _params_text(case.params)
    if not d.feasible:  # infeasible is an answer, not a number
        why = "; ".join(getattr(d.detail, "infeasible", None) or ()) or "the design does not fit the hardware"
        return ComparisonRow(name, seq, _passes(name), d.description, None, None, None, None, "-", None,
                             case.seq_q, case.seq_kv, case.kv_heads, params, f"infeasible: {why}")  # fmt: skip
    footprint = (d.onchip_bytes or None) if device else d.onchip_bytes
    spilled = None
    if not device:
        from simulator.cost import shared_buffer

        spilled = float(sum(d.detail.spill_bytes_by_level.values()))
        buffer = shared_buffer(target.spec)
        if spilled and buffer:  # the buffer holds its capacity; the rest is the spill
            footprint = min(footprint, target.spec.level(buffer).capacity_words * target.spec.word_bytes)
    return ComparisonRow(name, seq, _passes(name), d.description, d.latency_s,
                         None if d.energy_j is None else d.energy_j * 1e12, d.dram_bytes, footprint, d.bound,
                         d.detail.tflops if device else None, case.seq_q, case.seq_kv, case.kv_heads,
                         params, "ok", spilled)  # fmt: skip


@dataclass(frozen=True)
class _Setting:
    """What every cell of one comparison shares, as given (a worker process rebuilds the target from it)."""

    target: Any  # a preset name, a .yaml path or a spec
    dtype: str | None
    model: str
    batch: int
    direction: str


@dataclass(frozen=True)
class _Cell:
    """One (variant, length) whose case can be built."""

    name: str  # registered name or .einsum path
    label: str
    seq: int
    params: Mapping[str, float]


_WORKER_TARGET: dict[str, Any] = {}  # a worker process's target, loaded once from the setting


def _cell_row(setting: _Setting, cell: _Cell, tgt: Any = None, case: Any = None) -> ComparisonRow:
    """One cell's row (``tgt`` and ``case``: the loaded target and the built case; in a worker, made again from
    the setting and the cell); a design that cannot be made is a row saying why."""
    from workloads.cases import case_for_shape, load_workload

    if tgt is None:
        if "target" not in _WORKER_TARGET:
            from simulator.targets import load_target

            _WORKER_TARGET["target"] = load_target(setting.target, dtype=setting.dtype)
        tgt = _WORKER_TARGET["target"]
    if case is None:
        case = case_for_shape(load_workload(cell.name), get_model(setting.model), batch=setting.batch,
                              seq=cell.seq, params=cell.params)  # fmt: skip
    try:
        return _row(case, tgt, cell.label, cell.seq, setting.direction)
    except AttnscopeError as exc:
        what = "no spatial mapping" if tgt.kind == "arch" else "impossible"
        return ComparisonRow(cell.label, cell.seq, _passes(cell.name), "-", None, None, None, None, "-", None,
                             case.seq_q, case.seq_kv, case.kv_heads, _params_text(case.params),
                             f"{what}: {exc}")  # fmt: skip


PRELOAD = ("attnscope.compare_attention", "attnscope.api")
"""What the workers' forkserver imports (:func:`mappers.workers.pool_context`)."""


def _evaluate_cells(
    setting: _Setting, tgt: Any, cells: Sequence[tuple[int, _Cell, Any]], jobs: int
) -> Iterator[tuple[int, ComparisonRow]]:
    """(row index, row) of every cell: in this process (on ``tgt``), or over ``jobs`` worker processes
    (:func:`mappers.workers.worker_pool`; each loads the target from the setting; a spec object that cannot be
    pickled keeps the cells here), longest sequences first so the slowest cells start first."""
    jobs = min(jobs, len(cells))
    if jobs > 1 and not isinstance(setting.target, str | Path):
        import pickle

        try:
            pickle.dumps(setting.target)
        except (TypeError, pickle.PicklingError):  # an in-memory spec the workers cannot receive: run here
            jobs = 1
    if jobs <= 1:
        for i, cell, case in cells:
            yield i, _cell_row(setting, cell, tgt, case)
        return
    from concurrent.futures import as_completed

    from mappers.workers import worker_pool

    order = sorted(cells, key=lambda c: -c[1].seq)
    with worker_pool(jobs, PRELOAD) as pool:
        futures = {pool.submit(_cell_row, setting, cell): i for i, cell, _ in order}
        for future in as_completed(futures):
            yield futures[future], future.result()


def compare_attention(
    *,
    model: str,
    seqs: Sequence[int],
    device: str | None = None,
    arch: str | None = None,
    variants: Sequence[str] | None = None,
    batch: int = 1,
    params: Mapping[str, float] | None = None,
    dtype: str | None = None,
    direction: str = "fwd",
    jobs: int = 1,
    progress: bool = False,
) -> AttentionComparison:
    """Cost each variant at each sequence length on a device or an architecture (module docstring): a loop
    over :func:`attnscope.api.evaluate_case`; ``jobs`` > 1 spreads the cells over that many worker processes
    (each rebuilds its case and target from the same inputs; the rows are the same, in the same order);
    ``progress`` shows a bar of the cells done on stderr.

    ``variants``: registered names or ``.einsum`` paths. ``params``: parameters (``window``, ``sinks``,
    ``density``, ``splits``, ...); each variant takes the ones it has (:func:`workloads.cases.accepted`)
    and its declared defaults for the rest. ``direction``: ``fwd`` (the forward pass), ``bwd`` (the backward
    pass) or ``fwd+bwd`` (a training step): :func:`mappers.direction.map_direction`: on a device the GPU
    backward kernels (the dense, causal and sliding-window shapes; another variant's row says it has none), on
    an array the derived backward cascade mapped like any cascade.
    """
    from mappers.direction import check_direction
    from simulator.targets import load_target
    from workloads.cases import accepted, case_for_shape, load_workload

    if (device is None) == (arch is None):
        raise AttnscopeError("give exactly one target: a device (GPU/edge preset) or an arch (spatial array)")
    check_direction(direction, "--direction")
    start = time.perf_counter()
    shape = get_model(model)
    chosen = _choose_variants(variants)
    if not seqs:
        raise ShapeError(f"give at least one sequence length, e.g. {DEFAULT_SEQS}")
    for s in seqs:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ShapeError(f"sequence lengths must be positive integers, got {s!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ShapeError(f"batch must be a positive integer, got {batch!r}")
    params = dict(params or {})
    tgt = load_target(device if device is not None else arch, dtype=dtype if device is not None else None)
    kind = tgt.kind
    if direction != "fwd" and kind == "device" and tgt.dtype == "fp8":
        raise AttnscopeError(f"--direction {direction} with --dtype fp8: the GPU backward kernels run fp16 and bf16 "
                             "(FlashAttention-3's FP8 path is forward only); give --dtype bf16 or fp16")  # fmt: skip
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise AttnscopeError(f"jobs must be a positive integer, got {jobs!r}")
    if jobs > 1:
        from mappers.workers import pool_context

        pool_context(PRELOAD)  # the forkserver warms up while the cases are built
    rows: list[ComparisonRow | None] = []
    cells: list[tuple[int, _Cell, Any]] = []  # (row index, cell, its case) of every case that could be built
    for name in chosen:
        w = load_workload(name)
        taken = {k: v for k, v in params.items() if accepted(w, k)}
        if shape.window and name == "sliding-window":  # the model's own window, unless --window is given
            taken.setdefault("window", shape.window)
        label = w.name if name in workloads.CASCADES else name
        for seq in seqs:
            try:
                case = case_for_shape(w, shape, batch=batch, seq=seq, params=taken)
            except AttnscopeError as exc:
                rows.append(ComparisonRow(label, seq, _passes(name), "-", None, None, None, None, "-", None,
                                          seq, seq, None, _params_text(taken), f"impossible: {exc}"))  # fmt: skip
                continue
            cells.append((len(rows), _Cell(name, label, seq, taken), case))
            rows.append(None)
    setting = _Setting(device if device is not None else arch, dtype if device is not None else None, model, batch,
                       direction)  # fmt: skip
    from tqdm import tqdm

    with tqdm(total=len(cells), desc=f"compare-attention on {tgt.name}", unit="cell", disable=not progress,
              file=sys.stderr) as bar:  # fmt: skip
        for i, row in _evaluate_cells(setting, tgt, cells, jobs):
            rows[i] = row
            bar.update(1)
    notes = [
        f"Model {shape.name}: {shape.heads} query heads, {shape.kv_heads} K/V heads, head dim {shape.head_dim} "
        f"({shape.source}); batch {batch}.",
        _native_note(shape),
        *(f"Model config: {n}" for n in shape.notes),
        "Prefill variants: P = M = seq (non-causal unless the cascade masks); decode variants (a cascade that "
        "declares its query count, `param P = 1`): that many queries against seq keys.",
    ]
    if direction != "fwd":
        notes.append(
            f"Direction {direction}: the backward pass"
            + (" after the forward pass" if direction == "fwd+bwd" else "")
            + " on a device by the GPU backward kernels (FlashAttention-2/-3, unfused, math: "
            "simulator.kernels.backward) for the dense, causal and sliding-window shapes only, on an array by the "
            "backward cascade derived from each forward cascade (einsum.backward: FlashAttention-2's "
            "recomputation form where it has a softmax, reverse mode otherwise), mapped like any cascade."
        )
    if kind == "device":
        notes.append(
            f"{tgt.name}, {tgt.dtype}: each cascade becomes the kernel its structure calls for (mappers.catalog "
            "'kernel': fused tile programs lowered from the cascade with masks skipping key tiles, decode and "
            "split-K, or the unfused chain for multi-pass cascades); energy is not modelled on devices."
        )
    else:
        notes.append(
            f"{tgt.name}: one-pass cascades by the 'fused' mapper (search_fused: binding, schedule and query block "
            "searched; key tiles that a static mask hides from a whole query block, or that a block mask of the "
            "given density drops, are skipped), multi-pass ones by 'passes' (the fusion space derived from the "
            "cascade); the best design's latency, energy, DRAM bytes and largest buffer occupancy."
        )
    return AttentionComparison(tgt.name, kind, shape.name, batch, shape.heads, shape.kv_heads, shape.head_dim,
                               tuple(seqs), chosen, tuple(rows), tgt.spec.source, time.perf_counter() - start,
                               tuple(notes), shape.attention_kind, direction)  # fmt: skip


def _native_note(shape: Any) -> str:
    """Which variant the model's own attention is, with the sizes it takes from the model."""
    kind = shape.attention_kind
    if kind == "mla":
        a = shape.mla
        how = (f"multi-head latent attention: mla and mla-expanded run at its latent L = {a.kv_lora_rank}, rope "
               f"ER = {a.qk_rope_head_dim}, q/k head E = {a.qk_nope_head_dim}, v head F = {a.v_head_dim}; the other "
               f"variants at q/k head dim {shape.head_dim} (nope + rope) and v head dim {a.v_head_dim}")  # fmt: skip
    elif kind == "sliding-window":
        how = f"sliding-window attention, window {shape.window} (sliding-window runs at it unless --window is given)"
    elif kind == "gqa":
        how = f"grouped-query attention, {shape.heads // shape.kv_heads} query heads per K/V head"
    else:
        how = "multi-head attention (one K/V head per query head)"
    return f"The model's own attention is `{kind}`: {how}."


# --------------------------------------------------------------------------------------------------- output


def _fmt(x: float | None, scale: float = 1.0) -> str:
    if x is None:
        return "-"
    v = x / scale
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def _seq_label(n: int) -> str:
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def write_comparison(study: AttentionComparison, out_dir: str | Path, *, plot: bool = True) -> dict[str, Path]:
    """Write ``compare.csv``, ``report.md`` and ``compare.png`` into out_dir; returns the paths written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AttnscopeError(f"cannot create {out}: {exc.strerror}") from None
    paths = {"csv": out / "compare.csv", "report": out / "report.md"}
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in study.rows:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    if plot:
        paths["plot"] = out / "compare.png"
        _plot(study, paths["plot"])
    paths["report"].write_text(_report(study, plot), encoding="utf-8")
    return paths


def _pivot(study: AttentionComparison, value, unit: str) -> list[str]:
    seqs = study.seqs
    lines = [f"| variant | passes | {' | '.join(_seq_label(s) for s in seqs)} |",
             "|---|---:|" + "---:|" * len(seqs)]  # fmt: skip
    by = {(r.variant, r.seq): r for r in study.rows}
    for v in study.variants:
        cells = [value(by[v, s]) for s in seqs]
        lines.append(f"| {v} | {by[v, seqs[0]].passes} | {' | '.join(cells)} |")
    return [f"({unit})", "", *lines, ""]


_DIRECTION_TITLE = {"fwd": "", "bwd": " (backward)", "fwd+bwd": " (forward + backward)"}


def _report(study: AttentionComparison, plot: bool) -> str:
    device = study.target_kind == "device"
    lines = [
        f"# Attention variants on {study.target}: {study.model}{_DIRECTION_TITLE[study.direction]}",
        "",
        f"Target **{study.target}** ({study.target_kind}); model **{study.model}** ({study.heads} heads, "
        f"{study.kv_heads} K/V heads, head dim {study.head_dim}), batch {study.batch}; sequence lengths "
        f"{', '.join(_seq_label(s) for s in study.seqs)}. Computed in {study.seconds:.2f} s. Figures of the "
        f"target: {study.source}",
        "",
        "## Latency and the bound that limits it",
        "",
        *_pivot(study, lambda r: f"{_fmt(r.latency_s, 1e-3)} {r.bound}" if r.ok else "-", "ms, binding ceiling"),
    ]
    if not device:
        lines += ["## Energy", "", *_pivot(study, lambda r: _fmt(r.energy_pj, 1e6), "uJ")]
    lines += [
        "## DRAM traffic" if not device else "## HBM / DRAM traffic",
        "",
        *_pivot(study, lambda r: _fmt(r.dram_bytes, 1e9), "GB"),
        "## On-chip footprint",
        "",
        *_pivot(study, lambda r: _fmt(r.footprint_bytes, 1e6),
                "MB; " + ("shared memory held by resident CTAs" if device else "largest global-buffer occupancy, "
                          "at most its capacity")),
    ]  # fmt: skip
    if any(r.spilled_bytes for r in study.rows):
        what = "GB of an overflowing global buffer's accesses that go to DRAM instead (part of the DRAM traffic)"
        lines += ["## Spilled to DRAM", "", *_pivot(study, lambda r: _fmt(r.spilled_bytes, 1e9), what)]
    if device:
        lines += ["## Attained throughput", "", *_pivot(study, lambda r: _fmt(r.tflops), "TFLOP/s")]
    missing = [r for r in study.rows if r.status != "ok"]
    if missing:
        lines += ["## Rows without (valid) numbers", "", "| variant | seq | status |", "|---|---:|---|"]
        lines += [f"| {r.variant} | {_seq_label(r.seq)} | {r.status.replace('|', '/')} |" for r in missing]
        lines.append("")
    lines += ["## Variant parameters and kernels", "", "| variant | parameters (at the last length) | kernel |",
              "|---|---|---|"]  # fmt: skip
    last = {r.variant: r for r in study.rows}
    lines += [f"| {v} | {last[v].params or '-'} | {last[v].kernel.replace('|', '/')} |" for v in study.variants]
    lines += ["", "## Assumptions", "", *[f"- {n}" for n in study.notes]]
    if plot:
        lines += ["", "![latency, energy, traffic and footprint vs sequence length](compare.png)"]
    return "\n".join(lines) + "\n"


def _plot(study: AttentionComparison, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("latency_s", "latency (s)", 1.0)]
    if study.target_kind == "arch":
        panels.append(("energy_pj", "energy (J)", 1e12))
    panels += [("dram_bytes", "DRAM / HBM traffic (bytes)", 1.0), ("footprint_bytes", "on-chip footprint (bytes)", 1.0)]
    cols = len(panels) if len(panels) <= 3 else 2
    rows_n = math.ceil(len(panels) / cols)
    legend_rows = math.ceil(len(study.variants) / 6)
    height = 4.0 * rows_n + 1.0 + 0.22 * legend_rows
    fig = Figure(figsize=(5.2 * cols, height), dpi=100)
    FigureCanvasAgg(fig)
    import matplotlib

    colors = matplotlib.colormaps["tab20"].colors
    styles = ("-", "--", "-.", ":")
    markers = "osD^v<>pP*hX"
    handles = {}
    for i, (key, label, scale) in enumerate(panels):
        ax = fig.add_subplot(rows_n, cols, i + 1)
        for j, v in enumerate(study.variants):
            pts = [(r.seq, getattr(r, key) / scale) for r in study.rows
                   if r.variant == v and getattr(r, key) is not None and getattr(r, key) > 0]  # fmt: skip
            if not pts:
                continue
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[j % len(colors)],
                              linestyle=styles[(j // len(colors)) % len(styles)], marker=markers[j % len(markers)],
                              markersize=4, linewidth=1.3, label=v)  # fmt: skip
            handles.setdefault(v, line)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{study.model} attention variants on {study.target} (batch {study.batch})")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(6, len(handles)), fontsize=8)
    fig.subplots_adjust(left=0.08, right=0.98, top=1 - 0.5 / height, bottom=(0.75 + 0.22 * legend_rows) / height,
                        hspace=0.3, wspace=0.3)  # fmt: skip
    fig.savefig(path)
