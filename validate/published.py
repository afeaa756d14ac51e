"""Published GPU figures against the model, in two tables that cannot flatter it (``attnscope validate --published``).

Every committed file of published figures (``validate/data/published-*.csv``, :data:`DATASETS`) is read into
:class:`PublishedPoint` rows, each with its source, device preset, kernel, direction, dtype, shape, FLOP
convention, measured time and **role**:

* ``calibration``: a microbenchmark a preset's efficiency was derived from (the GEMM MAMF rows), or a figure
  that sets a harness constant of its source (the wall-clock floor of a timing that includes host launch and
  synchronization); shown in-sample;
* ``design``: figures that were in view when a model structure was settled (the FlashAttention-3 paper's forward
  figures: the fused kernels' overlap rules), so they are held out for parameters but not for design; shown
  in-sample;
* ``validation``: figures no constant and no structure was chosen against; only these are scored.

A validation row the model cannot stand for (no preset for the GPU; an unstated SKU or library version; a library
kernel-selection cliff the model has no heuristic for) carries its reason in ``not_scored`` and is listed, not
scored. Error = predicted / measured - 1; the summary is the mean |error| per (device, kernel, direction).
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from einsum.errors import AttnscopeError, SpecError
from simulator.device import load_device
from simulator.gpu import predict

DATA_DIR = Path(__file__).resolve().parent / "data"
ROLES = ("calibration", "design", "validation")


@dataclass(frozen=True)
class PublishedPoint:
    """One published figure and what the model says of it. Times in s."""

    dataset: str  # file name under validate/data
    source: str
    device: str  # preset id ('' when there is none)
    op: str  # gemm | sdpa
    kernel: str  # gemm, fa2, fa3, unfused
    direction: str  # fwd | bwd
    dtype: str
    shape: dict[str, Any]
    flop_convention: str
    measured_s: float
    role: str
    timing: str = "kernel"  # kernel (CUDA events / do_bench) | wall (host timer around launch + synchronize)
    not_scored: str = ""
    predicted_s: float | None = None
    note: str = ""

    @property
    def error(self) -> float | None:
        return None if self.predicted_s is None else self.predicted_s / self.measured_s - 1.0

    @property
    def key(self) -> tuple[str, str, str]:
        return self.device, self.kernel, self.direction

    def shape_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.shape.items() if v not in (None, False))


def _read(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except OSError as exc:
        raise AttnscopeError(f"cannot read {path}: {exc.strerror}") from None


def _gemm(path: Path) -> list[PublishedPoint]:
    out = []
    for i, r in enumerate(_read(path), start=2):
        try:
            shape = {"m": int(r["m"]), "n": int(r["n"]), "k": int(r["k"])}
            measured = float(r["time_ms"]) / 1e3
        except (KeyError, ValueError) as exc:
            raise AttnscopeError(f"{path}:{i}: expected integer m, n, k and a number time_ms ({exc})") from None
        out.append(PublishedPoint(path.name, r["source"], r["device"], "gemm", "gemm", "fwd", r["dtype"], shape,
                                  r["flop_convention"], measured, r["role"], r["timing"], r["not_scored"],
                                  note=r["note"]))  # fmt: skip
    return out


_SHAPE_COLUMNS = (("batch", "batch"), ("heads", "heads"), ("kv_heads", "kv_heads"), ("seq_q", "seq_len"),
                  ("head_dim", "head_dim"))  # fmt: skip


def _attention(path: Path, role_of: Any) -> list[PublishedPoint]:
    out = []
    for i, r in enumerate(_read(path), start=2):
        try:
            shape = {key: int(r[col]) for key, col in _SHAPE_COLUMNS} | {"causal": r["causal"] == "true"}
            measured = float(r["time_ms"]) / 1e3
        except (KeyError, ValueError) as exc:
            raise AttnscopeError(f"{path}:{i}: expected integer shape columns and a number time_ms ({exc})") from None
        device = r.get("device") or "h100-sxm"
        convention = r.get("flop_convention") or "fwd 4*b*s^2*h*d (/2 causal)"
        direction = r.get("direction") or "fwd"
        out.append(PublishedPoint(path.name, r["source"], device, "sdpa", r["kernel"], direction, r["dtype"], shape,
                                  convention, measured, role_of(r), note=r.get("note", "")))  # fmt: skip
    return out


def _fa3_paper_role(row: dict[str, str]) -> str:
    """The forward figures the fused kernels' overlap structure was settled with in view (docs/gpu.md)."""
    return "design"


DATASETS: dict[str, Any] = {
    "published-gemm.csv": _gemm,
    "published-attention-h100.csv": lambda p: _attention(p, _fa3_paper_role),
    "published-attention-train.csv": lambda p: _attention(p, lambda r: r["role"]),
}
"""Committed files of published figures -> their readers."""


def load_points(data_dir: str | Path = DATA_DIR) -> list[PublishedPoint]:
    """Every published figure of :data:`DATASETS` in ``data_dir``, in file order."""
    points: list[PublishedPoint] = []
    for name, reader in DATASETS.items():
        path = Path(data_dir) / name
        if not path.exists():
            raise AttnscopeError(f"{path}: missing; the published datasets are {', '.join(DATASETS)}")
        points.extend(reader(path))
    bad = [p for p in points if p.role not in ROLES]
    if bad:
        raise AttnscopeError(f"{bad[0].dataset}: role {bad[0].role!r}; expected one of {', '.join(ROLES)}")
    return points


def predict_points(points: Iterable[PublishedPoint]) -> list[PublishedPoint]:
    """Each point with the model's prediction (None, with the reason in ``not_scored``, where it has none); wall
    timings add their source's harness floor (the calibration row of that source with wall timing)."""
    out = []
    for p in points:
        if not p.device:
            out.append(p)
            continue
        try:
            if p.op == "gemm":
                pred = predict(p.device, "gemm", dtype=p.dtype, **p.shape)
            else:
                pred = predict(p.device, "sdpa", dtype=p.dtype, kernel=p.kernel, direction=p.direction, **p.shape)
        except SpecError as exc:
            out.append(replace(p, not_scored=p.not_scored or f"no prediction: {exc}"))
            continue
        out.append(replace(p, predicted_s=pred.time_s))
    floors = {p.source: p.measured_s - p.predicted_s for p in out
              if p.timing == "wall" and p.role == "calibration" and p.predicted_s is not None}  # fmt: skip
    return [replace(p, predicted_s=p.predicted_s + floors.get(p.source, 0.0))
            if p.timing == "wall" and p.predicted_s is not None else p for p in out]  # fmt: skip


@dataclass(frozen=True)
class Group:
    """Mean |error| of the scored points of one (device, kernel, direction)."""

    device: str
    kernel: str
    direction: str
    n: int
    mean_abs_error: float
    max_abs_error: float
    median_error: float

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "kernel": self.kernel, "direction": self.direction, "n": self.n,
                "mean_abs_error_pct": 100 * self.mean_abs_error, "max_abs_error_pct": 100 * self.max_abs_error,
                "median_error_pct": 100 * self.median_error}  # fmt: skip


def scored(points: Iterable[PublishedPoint]) -> list[PublishedPoint]:
    """Validation rows with a prediction and no reason to set them aside."""
    return [p for p in points if p.role == "validation" and not p.not_scored and p.error is not None]


def summarize(points: Iterable[PublishedPoint]) -> list[Group]:
    """Per (device, kernel, direction): mean and largest |error|, median signed error."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for p in points:
        groups.setdefault(p.key, []).append(p.error)
    return [Group(*key, len(e), statistics.fmean(abs(x) for x in e), max(abs(x) for x in e), statistics.median(e))
            for key, e in sorted(groups.items())]  # fmt: skip


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.4g}"


def _row(p: PublishedPoint) -> list[str]:
    err = "-" if p.error is None else f"{100 * p.error:+.1f}%"
    return [p.source, p.device or "-", p.kernel, p.direction, p.dtype, f"`{p.shape_text()}`", p.flop_convention,
            p.timing, _ms(p.measured_s), _ms(p.predicted_s), err]  # fmt: skip


_HEADER = ("source", "device", "kernel", "direction", "dtype", "shape", "FLOP convention", "timing", "measured ms",
           "predicted ms", "error")  # fmt: skip


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]


def report(points: Sequence[PublishedPoint]) -> str:
    """The two-table report as Markdown."""
    inside = [p for p in points if p.role in ("calibration", "design")]
    valid = [p for p in points if p.role == "validation"]
    kept, aside = scored(valid), [p for p in valid if p not in scored(valid)]
    presets = sorted({p.device for p in points if p.device})
    cal = [[d, load_device(d).efficiency.calibration.data_file, load_device(d).efficiency.calibration.method]
           for d in presets]  # fmt: skip
    groups = [[g.device, g.kernel, g.direction, g.n, f"{100 * g.mean_abs_error:.1f}%", f"{100 * g.max_abs_error:.1f}%",
               f"{100 * g.median_error:+.1f}%"] for g in summarize(kept)]  # fmt: skip
    group_header = ("device", "kernel", "direction", "points", "mean abs error", "max abs error", "median error")
    lines = [
        "# Published GPU figures against the model",
        "",
        "Error = predicted / measured - 1 (positive: the model is slower). FLOP conventions are the sources' own;",
        "times are compared, so a convention changes the TFLOP/s a source prints, not the comparison (causal",
        "FlashAttention benchmarks count s^2/2 pairs, the model s(s+1)/2 unmasked pairs).",
        "",
        "## Calibration inputs of the presets (named)",
        "",
        *_table(("preset", "calibration data", "method"), cal),
        "",
        f"## Table 1: data used to design or calibrate ({len(inside)} figures; in-sample, not scored)",
        "",
        "`calibration`: a preset's efficiency or a source's harness floor was derived from the figure; `design`: "
        "the figure was in view when a model structure was settled.",
        "",
        *_table(("role", "dataset", *_HEADER), ([p.role, p.dataset, *_row(p)] for p in inside)),
        "",
        f"## Table 2: data used only to validate ({len(kept)} figures scored)",
        "",
        "No constant and no structure of the model was chosen against these figures.",
        "",
        *_table(("dataset", *_HEADER), ([p.dataset, *_row(p)] for p in kept)),
        "",
        "### Mean error per (device, kernel, direction), validation-only figures",
        "",
        *_table(group_header, groups),
        "",
    ]
    if aside:
        body = ([p.dataset, *_row(p), p.not_scored] for p in aside)
        lines += [f"### Validation figures listed, not scored ({len(aside)})", "",
                  *_table(("dataset", *_HEADER, "why not scored"), body), ""]  # fmt: skip
    return "\n".join(lines)


def write_published_report(out: str | Path, data_dir: str | Path = DATA_DIR) -> dict[str, Any]:
    """Write ``report.md`` into ``out``; returns a JSON-ready summary."""
    points = predict_points(load_points(data_dir))
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(report(points), encoding="utf-8")
    except OSError as exc:
        raise AttnscopeError(f"cannot write {out / 'report.md'}: {exc.strerror}") from None
    kept = scored(points)
    return {
        "report": str(out / "report.md"),
        "figures": len(points),
        "in_sample": sum(p.role != "validation" for p in points),
        "scored": len(kept),
        "not_scored": sum(p.role == "validation" for p in points) - len(kept),
        "groups": [g.to_dict() for g in summarize(kept)],
        "in_sample_groups": [
            g.to_dict() for g in summarize(p for p in points if p.role != "validation" and p.error is not None)
        ],
    }
