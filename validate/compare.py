"""Predicted vs measured: every timed row of a measurement CSV against :func:`simulator.gpu.predict`.

``attnscope validate --data FILE [--device NAME] --out DIR`` writes ``report.md`` (MAPE and max error per kernel
family, the worst points, every row per family) and two figures beside it. Only ``validation`` rows are scored;
``calibration`` rows (the microbenchmarks the preset's efficiencies were fitted to) are shown apart, as an
in-sample check. Rows the model cannot predict (a fused kernel for an unsupported dtype, a block-sparse mask)
are listed with the model's reason, and CPU rows timed while other processes took the machine (``contended``,
see :data:`validate.harness.schema.CONTENDED`) are listed apart; neither is silently dropped.

Which model kernel stands for which measured backend (:func:`model_kernel`): torch's flash backend and
FlexAttention are FlashAttention-2-style (``fa2``); cuDNN attention is FlashAttention-3-style on Hopper (``fa3``,
else ``fa2``); the memory-efficient backend is modelled as ``fa2``; ``math`` and ``unfused`` as themselves; a
decode step as ``decode``. On a CPU device the math backend is ``math``, unfused attention ``unfused``, and every
other attention row (the flash backend, a decode step, compiled FlexAttention) PyTorch's CPU flash kernel,
``cpu-flash``.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from einsum.errors import AttnscopeError, SpecError
from simulator.device import DEVICES, DeviceSpec, load_device
from simulator.gpu import predict
from validate.harness.schema import CONTENDED, Measurement, read_csv

BAND = 0.20
"""Half-width of the band drawn around y = x in the predicted-vs-measured plot (±20%)."""
FAMILY_ORDER = ("gemm", "softmax", "sdpa", "unfused", "flex", "decode", "copy", "exp", "elementwise")
_DEVICE_NAMES: tuple[tuple[str, str], ...] = (
    (r"H200", "h200"),
    (r"H100.*PCIe", "h100-pcie"),
    (r"H100", "h100-sxm"),
    (r"A100", "a100-sxm"),
    (r"\bL4\b", "l4"),
    (r"RTX 4090", "rtx4090"),
)
"""Device names as CUDA reports them -> preset ids (first match wins)."""


@dataclass(frozen=True)
class Point:
    """One measured row and the model's prediction for it."""

    row: Measurement
    kernel: str
    """Model kernel used (gemm, softmax, copy, exp, or an sdpa kernel: fa2, fa3, math, unfused, decode)."""
    predicted_s: float | None
    """Predicted time, s; None when the model has no prediction (see note)."""
    bound: str
    """What bounds the predicted time (tensor, memory, sfu, fma, launch, ...)."""
    note: str = ""
    """Why there is no prediction."""

    @property
    def measured_s(self) -> float:
        return float(self.row.median_s)

    @property
    def error(self) -> float | None:
        """Signed relative error (predicted - measured) / measured."""
        return None if self.predicted_s is None else self.predicted_s / self.measured_s - 1.0

    @property
    def group(self) -> str:
        """Family, with the backend for SDPA rows (e.g. ``sdpa/flash``)."""
        return f"{self.row.family}/{self.row.backend}" if self.row.family in ("sdpa",) else self.row.family


def device_label(device_name: str) -> str | None:
    """The preset id of a CUDA device name (``NVIDIA H100 80GB HBM3`` -> ``h100-sxm``), or None."""
    return next((ident for pattern, ident in _DEVICE_NAMES if re.search(pattern, device_name)), None)


def guess_device(data_file: str | Path, rows: Sequence[Measurement]) -> str:
    """The preset a measurement file is for: ``<preset>-<YYYY-MM-DD>.csv``, else the CUDA device name."""
    stem = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", Path(data_file).stem)
    if stem in DEVICES:
        return stem
    names = {r.device_name for r in rows}
    found = {device_label(n) for n in names} - {None}
    if len(found) == 1:
        return found.pop()
    raise AttnscopeError(f"{data_file}: cannot tell which device preset it is for (device {', '.join(names)}); "
                         f"give --device (registered: {', '.join(sorted(DEVICES))})")  # fmt: skip


def model_kernel(row: Measurement, spec: DeviceSpec) -> tuple[str, dict[str, Any]]:
    """(predict op, keyword arguments) standing for a measured row (see the module docstring)."""
    s = _shape(row.shape)
    if row.family == "gemm":
        return "gemm", {"m": s["m"], "n": s["n"], "k": s["k"], "batch": s.get("batch", 1)}
    if row.op == "softmax":
        return "softmax", {"rows": s["rows"], "cols": s["cols"]}
    if row.op == "copy":
        return "copy", {"nbytes": s["nbytes"]}
    if row.op == "broadcast_add":
        return "broadcast_add", {"batch": s["batch"], "rows": s["rows"], "cols": s["cols"]}
    if row.op == "exp":
        return "exp", {"elements": s["elements"]}
    if row.op == "exp_chain":
        raise SpecError("exp_chain has no kernel model: it calibrates efficiency.exp (exp results per second / peak)")
    attn = {"batch": s["batch"], "heads": s["heads"], "kv_heads": s.get("kv_heads", s["heads"]),
            "head_dim": s["head_dim"]}  # fmt: skip
    if row.op == "decode":
        attn.update(seq_q=1, seq_kv=s["cache_len"] + 1, causal=False)
    else:
        attn.update(seq_q=s["seq_q"], seq_kv=s["seq_kv"], causal=row.mask in ("causal", "sliding_window"))
        if row.mask == "sliding_window":
            attn["window"] = s["window"]
        if row.mask == "block_sparse":
            raise SpecError("block-sparse masks are not modelled by simulator.gpu (no sdpa kernel takes a block map)")
    attn["kernel"] = _attention_kernel(row, spec)
    return "sdpa", attn


def _attention_kernel(row: Measurement, spec: DeviceSpec) -> str:
    if row.op == "unfused_attention":
        return "unfused"
    if spec.kind == "cpu":
        return "math" if row.backend == "math" else "cpu-flash"
    if row.op == "decode":
        return "decode"
    if row.op == "flex_attention":
        return "fa2"
    hopper = spec.tensor_instruction == "wgmma"
    return {"math": "math", "cudnn": "fa3" if hopper else "fa2"}.get(row.backend, "fa2")


def _shape(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=") for part in text.split(";") if part)}


def compare(rows: Iterable[Measurement], device: str | DeviceSpec) -> list[Point]:
    """A prediction for every ``ok`` row (validation and calibration alike), in row order."""
    spec = load_device(device)
    points = []
    for row in rows:
        if row.status != "ok":
            continue
        try:
            op, kwargs = model_kernel(row, spec)
        except SpecError as exc:
            points.append(Point(row, "-", None, "", str(exc)))
            continue
        kernel = kwargs.get("kernel", op)
        try:
            p = predict(spec, op, dtype=row.dtype, **kwargs)
        except SpecError as exc:
            points.append(Point(row, kernel, None, "", str(exc)))
            continue
        points.append(Point(row, kernel, p.time_s, p.bound))
    return points


@dataclass(frozen=True)
class Summary:
    """Error statistics of one group of points (errors in percent)."""

    group: str
    n: int
    mape: float
    max_error: float
    median_error: float

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "n": self.n, "mape_pct": self.mape, "max_error_pct": self.max_error,
                "median_error_pct": self.median_error}  # fmt: skip


def summarize(points: Iterable[Point], key: str = "family") -> list[Summary]:
    """MAPE, largest |error| and median signed error per family (``key="family"``) or per ``group``."""
    groups: dict[str, list[float]] = {}
    for p in points:
        if p.error is not None:
            groups.setdefault(p.row.family if key == "family" else p.group, []).append(100.0 * p.error)
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    out = []
    for name in sorted(groups, key=lambda g: (order.get(g.split("/")[0], 99), g)):
        errs = groups[name]
        out.append(Summary(name, len(errs), statistics.fmean(abs(e) for e in errs), max(abs(e) for e in errs),
                           statistics.median(errs)))  # fmt: skip
    return out


def scored_points(points: Iterable[Point]) -> list[Point]:
    """The points a report scores: validation rows with a prediction, timed without contention."""
    return [p for p in points if p.row.role == "validation" and p.error is not None and not p.row.contended]


# -- report ---------------------------------------------------------------------------------------------------


def write_report(data_file: str | Path, out: str | Path, device: str | None = None, figures: bool = True) -> dict:
    """Write ``report.md`` (and the figures) for a measurement CSV into ``out``; returns a JSON-ready summary."""
    rows = read_csv(data_file)
    if not rows:
        raise AttnscopeError(f"{data_file}: no rows")
    ident = device or guess_device(data_file, rows)
    spec = load_device(ident)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AttnscopeError(f"cannot create {out}: {exc.strerror}") from None
    points = compare(rows, spec)
    scored = scored_points(points)
    calibration = [p for p in points if p.row.role == "calibration" and p.error is not None]
    unpredicted = [p for p in points if p.error is None]
    contended = [p for p in points if p.row.role == "validation" and p.error is not None and p.row.contended]
    families, groups = summarize(scored), summarize(scored, key="group")
    files = _figures(scored, out) if figures and scored else []
    text = _markdown(data_file, rows, spec, scored, calibration, unpredicted, contended, families, groups, files)
    (out / "report.md").write_text(text, encoding="utf-8")
    return {
        "data": str(data_file), "device": spec.id, "report": str(out / "report.md"), "figures": files,
        "rows": len(rows), "scored": len(scored), "unpredicted": len(unpredicted), "contended": len(contended),
        "families": [s.to_dict() for s in families], "groups": [s.to_dict() for s in groups],
        "calibration": [s.to_dict() for s in summarize(calibration)],
    }  # fmt: skip


def _fmt_s(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def _point_row(p: Point) -> list[str]:
    r = p.row
    return [p.group, r.mask, r.dtype, f"`{r.shape}`", p.kernel, _fmt_s(p.measured_s),
            f"{_fmt_s(r.q1_s)}–{_fmt_s(r.q3_s)}", _fmt_s(p.predicted_s), f"{100 * p.error:+.1f}%", p.bound]  # fmt: skip


_POINT_HEADER = ("family", "mask", "dtype", "shape", "model", "measured", "IQR", "predicted", "error", "bound")


def _markdown(data_file, rows, spec, scored, calibration, unpredicted, contended, families, groups, files) -> str:
    first = rows[0]
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "failed", "skipped")}
    dates = sorted(r.date for r in rows)
    cal = spec.efficiency.calibration
    eff = spec.efficiency
    units = "SMs" if first.device_kind == "cuda" else "threads"
    stack = f"torch {first.torch}" + (f", CUDA {first.cuda}" if first.cuda else "") + (
        f", driver {first.driver}" if first.driver else "")  # fmt: skip
    lines = [
        f"# Predicted vs measured: {spec.name} ({spec.id})",
        "",
        f"Data: `{data_file}` — {len(rows)} rows ({counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['skipped']} skipped), measured {dates[0]} to {dates[-1]} on {first.device_name} "
        f"({first.device_kind}, {first.arch}, {first.compute_units} {units}), {stack}, host {first.host}, "
        f"sweep `{first.sweep}`, up to {max(r.rounds for r in rows)} pass(es) per case.",
        f"Model: `simulator.gpu.predict` with preset `{spec.id}`: efficiencies gemm {eff.gemm:g}, copy {eff.copy:g}, "
        f"exp {eff.exp:g}, softmax {eff.softmax:g}; calibration: {cal.method} (data `{cal.data_file}`, {cal.date}).",
        "",
        "Error = predicted / measured − 1 (measured = median of the timed calls). MAPE = mean |error|. Only "
        "`validation` rows timed without contention are scored; calibration rows are shown apart below.",
        "",
        "## Error per kernel family",
        "",
        *_table(("family", "points", "MAPE", "max abs error", "median error"),
                ([s.group, s.n, f"{s.mape:.1f}%", f"{s.max_error:.1f}%", f"{s.median_error:+.1f}%"] for s in families)),
        "",
        "By backend:",
        "",
        *_table(("group", "points", "MAPE", "max abs error", "median error"),
                ([s.group, s.n, f"{s.mape:.1f}%", f"{s.max_error:.1f}%", f"{s.median_error:+.1f}%"] for s in groups)),
        "",
    ]  # fmt: skip
    for name in files:
        lines += [f"![{name}]({name})", ""]
    worst = sorted(scored, key=lambda p: abs(p.error), reverse=True)[:10]
    lines += ["## Worst 10 points", "", *_table(_POINT_HEADER, map(_point_row, worst)), ""]
    for fam in FAMILY_ORDER:
        chosen = [p for p in scored if p.row.family == fam]
        if chosen:
            lines += [f"## {fam}", "", *_table(_POINT_HEADER, map(_point_row, chosen)), ""]
    if calibration:
        lines += ["## Calibration rows (in-sample: the preset's efficiencies were fitted to rows like these)", "",
                  *_table(_POINT_HEADER, map(_point_row, calibration)), ""]  # fmt: skip
    if contended:
        lines += [f"## Timed under contention (other processes took > {CONTENDED:.0%} of the CPU: not scored)", "",
                  *_table(_POINT_HEADER, map(_point_row, contended)), ""]  # fmt: skip
    if unpredicted:
        body = ([p.group, p.row.mask, p.row.dtype, f"`{p.row.shape}`", p.note] for p in unpredicted)
        lines += ["## Measured but not predicted", "", *_table(("family", "mask", "dtype", "shape", "why"), body), ""]
    not_ok = [r for r in rows if r.status != "ok"]
    if not_ok:
        body = ([r.op, r.backend, r.mask, r.dtype, f"`{r.shape}`", r.status, r.reason] for r in not_ok)
        header = ("op", "backend", "mask", "dtype", "shape", "status", "reason")
        lines += ["## Failed or skipped (not timed)", "", *_table(header, body), ""]
    return "\n".join(lines)


def _figures(points: Sequence[Point], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({p.group for p in points})
    colors = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    fig, ax = plt.subplots(figsize=(6.5, 6))
    lo = min(min(p.measured_s, p.predicted_s) for p in points) / 1.5
    hi = max(max(p.measured_s, p.predicted_s) for p in points) * 1.5
    line = [lo, hi]
    ax.fill_between(line, [x * (1 - BAND) for x in line], [x * (1 + BAND) for x in line], color="0.9",
                    label=f"±{BAND:.0%}")  # fmt: skip
    ax.plot(line, line, color="0.4", lw=1, label="y = x")
    for g in groups:
        chosen = [p for p in points if p.group == g]
        ax.scatter([p.measured_s for p in chosen], [p.predicted_s for p in chosen], s=18, color=colors[g], label=g)
    ax.set(xscale="log", yscale="log", xlim=line, ylim=line, xlabel="measured time (s)", ylabel="predicted time (s)",
           title="predicted vs measured")  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "predicted_vs_measured.png", dpi=110)
    plt.close(fig)
    files = ["predicted_vs_measured.png"]

    attention = [p for p in points if p.row.seq_len is not None]
    if attention:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.axhspan(1 - BAND, 1 + BAND, color="0.9", label=f"±{BAND:.0%}")
        ax.axhline(1, color="0.4", lw=1)
        series: dict[str, list[Point]] = {}
        for p in attention:
            series.setdefault(f"{p.group} {p.row.mask}", []).append(p)
        for i, (label, chosen) in enumerate(sorted(series.items())):
            ax.plot([p.row.seq_len for p in chosen], [p.predicted_s / p.measured_s for p in chosen], ls="none",
                    marker="os^vD<>"[i % 7], ms=5, label=label, color=colors[chosen[0].group], alpha=0.8)  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="key/value sequence length", ylabel="predicted / measured",
               title="error vs sequence length")  # fmt: skip
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "error_vs_seq_len.png", dpi=110)
        plt.close(fig)
        files.append("error_vs_seq_len.png")
    return files
