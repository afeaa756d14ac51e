"""Calibrate a device preset's efficiencies from microbenchmark rows only, and record where they came from.

``attnscope calibrate --data FILE --device NAME [--out PRESET.yaml]`` reads the ``calibration`` rows of a
measurement CSV (GEMM by shape, copy bandwidth, exp throughput; never an attention timing, which is what the
model is judged on) and, per efficiency entry, finds the value at which the model best reproduces those rows:
the minimum of the summed squared log error. ``gemm`` and ``copy`` go through :func:`simulator.gpu.predict`
(a 1-D bounded search; copy first, because the GEMM model includes DRAM traffic at the copy bandwidth). ``exp``
comes from the ``exp_chain`` rows, which keep their data in cache so that only the exp rate bounds them: the
model of such a row is ``elements * depth / (exp peak * efficiency)``, whose log-least-squares fit is the
geometric mean of the rows' measured fractions of the exp peak. An entry whose rows the model does not respond
to keeps its value, and the result says so. Rows timed while other processes took the CPU (``contended``) are
not used. ``softmax`` comes from the library row-softmax rows of role ``calibration`` (a microbenchmark, like
copy; the file's ``validation`` softmax rows, at other shapes, stay held out), and ``broadcast`` from the
``broadcast_add`` rows (an additive mask broadcast over batch and heads, which PyTorch runs on its
non-vectorized elementwise path), relative to the copy, so it is fitted after it.

The **warm cache** comes first, from the copy rows alone (:func:`fit_cache`): ordered by working set (2 x the
bytes copied), the rows split where the log copy rate separates best into a fast (cache-resident) and a slow
(DRAM) group; when the fast group is at least :data:`CACHE_SPEEDUP` times faster, ``warm_cache_bytes`` is its
largest working set and ``l2_bytes_per_s`` its geometric-mean rate; otherwise the preset keeps its values. The
copy efficiency is then fitted with the cache in the model, so only the DRAM rows move it.

The preset is rewritten in place of its ``efficiency:`` block, so the comments and citations of the rest of
the file survive; the new file is read back and checked before it replaces the old one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy.optimize import minimize_scalar

from einsum.errors import AttnscopeError
from simulator.device import (
    DEVICES,
    EFFICIENCY_KEYS,
    DeviceSpec,
    load_device,
    read_device_file,
    replace_fields,
    with_efficiency,
)
from simulator.gpu import predict
from validate.compare import model_kernel
from validate.harness.schema import Measurement, read_csv

CACHE_SPEEDUP = 1.3
"""A copy this many times faster than the DRAM-bound copies counts as served by the cache."""
CACHE_KEYS: tuple[str, ...] = ("warm_cache_bytes", "l2_bytes_per_s")
"""Top-level preset fields :func:`fit_cache` derives."""
FIT_ORDER: tuple[str, ...] = ("copy", "broadcast", "softmax", "exp", "gemm")
"""Efficiency entries fitted, in order (broadcast is relative to the copy, so after it)."""
SOURCES = {
    "copy": ("copy",),
    "broadcast": ("broadcast_add",),
    "softmax": ("softmax",),
    "exp": ("exp_chain",),
    "gemm": ("matmul", "bmm"),
}
"""Which operations' calibration rows fit which entry."""
CAL_TAG = "CAL"
"""Reference tag the fitted efficiency lines cite."""
LOWEST = 0.01
"""Smallest efficiency the search considers."""
_REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Fit:
    """One fitted efficiency entry."""

    key: str
    """Efficiency entry (copy, exp, gemm)."""
    value: float
    """Fitted value (or the previous one when not identifiable)."""
    previous: float
    """Value in the preset before."""
    rows: int
    """Calibration rows used."""
    dtype: str
    """dtype of those rows."""
    mape_before: float
    """MAPE (percent) of those rows at the previous value."""
    mape_after: float
    """MAPE (percent) at the fitted value."""
    note: str = ""
    """``at the upper bound`` (the datasheet peak looks too low), ``not identifiable`` (kept), or empty."""

    def to_dict(self) -> dict:
        return {"key": self.key, "value": self.value, "previous": self.previous, "rows": self.rows,
                "dtype": self.dtype, "mape_before_pct": self.mape_before, "mape_after_pct": self.mape_after,
                "note": self.note}  # fmt: skip


def calibration_rows(rows: Sequence[Measurement]) -> list[Measurement]:
    """The rows a calibration may use: ok, role calibration, from a microbenchmark operation, not contended."""
    ops = {op for ops in SOURCES.values() for op in ops}
    return [r for r in rows if r.status == "ok" and r.role == "calibration" and r.op in ops and not r.contended]


def calibrate(
    rows: Sequence[Measurement], device: str | Path | DeviceSpec, data_file: str | Path, gemm_dtype: str | None = None
) -> tuple[DeviceSpec, list[Fit]]:
    """The preset with fitted efficiencies and the data file's provenance, and one :class:`Fit` per entry."""
    spec = load_device(device)
    usable = calibration_rows(rows)
    if not usable:
        ops = ", ".join(op for ops in SOURCES.values() for op in ops)
        raise AttnscopeError(f"{data_file}: no ok, uncontended calibration rows (operations {ops}, role calibration)")
    keep = _provenance_of(spec)
    fits: list[Fit] = []
    cache = fit_cache(spec, [r for r in usable if r.op == "copy"])
    if cache is not None:
        spec = replace_fields(spec, **{f.key: f.value for f in cache})
        fits.extend(cache)
    for key in FIT_ORDER:
        chosen = [r for r in usable if r.op in SOURCES[key]]
        dtypes = sorted({r.dtype for r in chosen})
        if key == "gemm" and len(dtypes) > 1:
            if gemm_dtype is None:
                raise AttnscopeError(f"{data_file}: GEMM calibration rows in {', '.join(dtypes)}; efficiency.gemm "
                                     "holds one value: choose one with --gemm-dtype")  # fmt: skip
            chosen = [r for r in chosen if r.dtype == gemm_dtype]
        if not chosen:
            continue
        fit = _fit_exp(spec, chosen) if key == "exp" else _fit(spec, key, chosen)
        fits.append(fit)
        follows = key == "gemm" and spec.efficiency.gemm_fp8 == spec.efficiency.gemm  # no fp8 value of its own
        spec = with_efficiency(spec, {key: fit.value, **({"gemm_fp8": fit.value} if follows else {})}, keep)
    first = usable[0]
    counts = ", ".join(
        f"{f.key}: {f.rows} {f.dtype} rows, MAPE {f.mape_after:.1f}%" for f in fits if f.key not in CACHE_KEYS
    )
    if cache is not None:
        counts += f"; warm cache from the copy rows: {cache[0].note}"
    provenance = {
        "data_file": _display_path(data_file),
        "date": max(r.date for r in usable)[:10],
        "method": (f"attnscope calibrate: per entry, the value minimizing the squared log error of the model over "
                   f"the file's calibration microbenchmarks (gemm, copy, broadcast, softmax through "
                   f"simulator.gpu.predict; exp against the exp peak) ({counts}); measured with torch {first.torch} on "
                   f"{first.device_name}, run {first.run_id}"),
    }  # fmt: skip
    refs = {**spec.references, CAL_TAG: f"attnscope calibrate: efficiencies fitted to the calibration "
            f"microbenchmark rows of {provenance['data_file']} (see efficiency.calibration)"}  # fmt: skip
    return replace_fields(with_efficiency(spec, {}, provenance), references=refs), fits


def _provenance_of(spec: DeviceSpec) -> dict[str, str]:
    cal = spec.efficiency.calibration
    return {"data_file": cal.data_file, "date": cal.date, "method": cal.method}


def _display_path(path: str | Path) -> str:
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(_REPO))
    except ValueError:
        return str(path)


def _fit(spec: DeviceSpec, key: str, rows: Sequence[Measurement]) -> Fit:
    keep = _provenance_of(spec)
    calls = [model_kernel(r, spec) for r in rows]
    measured = [r.median_s for r in rows]

    def predicted(value: float) -> list[float]:
        trial = with_efficiency(spec, {key: value}, keep)
        return [predict(trial, op, dtype=r.dtype, **kw).time_s for (op, kw), r in zip(calls, rows, strict=True)]

    def loss(log_value: float) -> float:
        return sum(math.log(p / m) ** 2 for p, m in zip(predicted(math.exp(log_value)), measured, strict=True))

    def mape(value: float) -> float:
        return 100.0 * sum(abs(p / m - 1) for p, m in zip(predicted(value), measured, strict=True)) / len(rows)

    previous = getattr(spec.efficiency, key)
    dtype = ",".join(sorted({r.dtype for r in rows}))
    best = minimize_scalar(loss, bounds=(math.log(LOWEST), 0.0), method="bounded", options={"xatol": 1e-4})
    value = round(min(1.0, math.exp(best.x)), 4)
    if predicted(value) == predicted(value * 0.9) == predicted(min(1.0, value * 1.1)):
        why = "not identifiable: the model's time for these rows does not depend on it near the fit (kept)"
        return Fit(key, previous, previous, len(rows), dtype, mape(previous), mape(previous), why)
    note = "at the upper bound: the rows run faster than the datasheet peak allows" if value >= 0.999 else ""
    return Fit(key, value, previous, len(rows), dtype, mape(previous), mape(value), note)


def fit_cache(spec: DeviceSpec, rows: Sequence[Measurement]) -> list[Fit] | None:
    """``warm_cache_bytes`` and ``l2_bytes_per_s`` from copy rows (module docstring), or None when the rows show
    no cache-resident group (fewer than two sizes, or no split with a :data:`CACHE_SPEEDUP` gap)."""
    points = sorted((2.0 * _sizes(r)["nbytes"], 2.0 * _sizes(r)["nbytes"] / r.median_s) for r in rows)
    if len({ws for ws, _ in points}) < 2:
        return None
    logs = [math.log(rate) for _, rate in points]

    def spread(group: Sequence[float]) -> float:
        mean = sum(group) / len(group)
        return sum((x - mean) ** 2 for x in group)

    split = min(range(1, len(points)), key=lambda i: spread(logs[:i]) + spread(logs[i:]))
    fast = math.exp(sum(logs[:split]) / split)
    slow = math.exp(sum(logs[split:]) / (len(logs) - split))
    if fast < CACHE_SPEEDUP * slow or points[split - 1][0] >= points[split][0]:
        return None
    ws = points[split - 1][0]
    dtype = ",".join(sorted({r.dtype for r in rows}))

    def mape(rate: float, group: Sequence[tuple[float, float]]) -> float:
        return 100.0 * sum(abs(r / rate - 1) for _, r in group) / len(group)

    cached = points[:split]
    note = f"copies up to {ws / 2**20:g} MiB working set ({len(cached)} rows) ran {fast / slow:.2f}x the DRAM copies"
    return [
        Fit("warm_cache_bytes", float(int(ws)), spec.warm_cache_bytes, len(points), dtype, 0.0, 0.0, note),
        Fit("l2_bytes_per_s", float(f"{fast:.3g}"), spec.l2_bytes_per_s, len(cached), dtype,
            mape(spec.l2_bytes_per_s, cached), mape(fast, cached)),
    ]  # fmt: skip


def _sizes(row: Measurement) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=") for part in row.shape.split(";") if part)}


def _fit_exp(spec: DeviceSpec, rows: Sequence[Measurement]) -> Fit:
    peak = spec.exp_per_s()
    fractions = []
    for r in rows:
        s = dict(part.split("=") for part in r.shape.split(";"))
        fractions.append(int(s["elements"]) * int(s["depth"]) / r.median_s / peak)
    previous = spec.efficiency.exp

    def mape(value: float) -> float:
        return 100.0 * sum(abs(f / value - 1) for f in fractions) / len(fractions)

    value = round(min(1.0, math.exp(sum(math.log(f) for f in fractions) / len(fractions))), 4)
    value = max(value, LOWEST)
    note = "at the upper bound: the rows run faster than the exp peak allows" if value >= 0.999 else ""
    dtype = ",".join(sorted({r.dtype for r in rows}))
    return Fit("exp", value, previous, len(rows), dtype, mape(previous), mape(value), note)


# -- writing the preset ---------------------------------------------------------------------------------------


def preset_path(device: str | Path) -> Path:
    """The YAML file of a registered device id or a path."""
    if isinstance(device, str) and device in DEVICES:
        return DEVICES[device]
    return Path(device)


def efficiency_block(spec: DeviceSpec, fits: Sequence[Fit], old_block: Sequence[str] = ()) -> str:
    """The ``efficiency:`` block as YAML text: fitted entries cite ``[CAL]``, the others keep their old line."""
    fitted = {f.key: f for f in fits if not f.note.startswith("not identifiable")}
    eff = spec.efficiency
    lines = ["efficiency:"]
    for key in EFFICIENCY_KEYS:
        f = fitted.get(key)
        old = next((line.rstrip("\n") for line in old_block if re.match(rf"\s+{key}:", line)), None)
        if f is not None:
            why = f"[{CAL_TAG}] fitted to {f.rows} {f.dtype} calibration rows, their MAPE {f.mape_after:.1f}%"
            lines.append(f"  {key}: {getattr(eff, key):g}".ljust(36) + f"# {why}")
        elif old is not None:
            lines.append(old)
        elif key == "gemm_fp8" and eff.gemm_fp8 == eff.gemm:
            continue  # absent: FP8 GEMMs take gemm's value
        else:
            lines.append(f"  {key}: {getattr(eff, key):g}".ljust(36) + "# no calibration rows (kept)")
    lines.append("  calibration:")
    for field in ("data_file", "date", "method"):
        lines.append(f"    {field}: {_quote(getattr(eff.calibration, field))}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _block(lines: Sequence[str], key: str) -> tuple[int, int] | None:
    """[start, end) of a top-level key's block (its line and the indented lines under it)."""
    start = next((i for i, line in enumerate(lines) if re.match(rf"{key}:\s*(#.*)?$", line)), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"\S", lines[i])), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return start, end


def write_preset(spec: DeviceSpec, fits: Sequence[Fit], source: Path, out: Path) -> Path:
    """Write ``source`` with its efficiency block (and the ``CAL`` reference) replaced to ``out``.

    The rest of the file, comments and citations included, is kept; the result must read back as ``spec``.
    """
    try:
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    except OSError as exc:
        raise AttnscopeError(f"cannot read {source}: {exc.strerror}") from None
    eff = _block(lines, "efficiency")
    if eff is None:
        raise AttnscopeError(f"{source}: no top-level 'efficiency:' block to replace")
    lines[eff[0] : eff[1]] = [efficiency_block(spec, fits, lines[eff[0] + 1 : eff[1]])]
    for f in fits:
        if f.key not in CACHE_KEYS:
            continue
        value = int(f.value) if f.key == "warm_cache_bytes" else f"{f.value:.3g}"
        why = f.note or "geometric mean of the cache-resident copies"
        text = f"{f.key}: {value}".ljust(36) + f"# [{CAL_TAG}] {why}\n"
        at = next((i for i, line in enumerate(lines) if re.match(rf"{f.key}:", line)), None)
        if at is None:  # a new field: before the efficiency block
            at = next(i for i, line in enumerate(lines) if re.match(r"efficiency:", line))
            lines.insert(at, text)
        else:
            lines[at] = text
    cal_line = f"  {CAL_TAG}: {_quote(spec.references[CAL_TAG])}\n"
    refs = _block(lines, "references")
    if refs is None:
        lines.insert(eff[0], f"references:\n{cal_line}")
    else:
        at = next((i for i in range(refs[0] + 1, refs[1]) if re.match(rf"\s+{CAL_TAG}:", lines[i])), None)
        if at is None:
            lines.insert(refs[1], cal_line)
        else:
            lines[at] = cal_line
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text("".join(lines), encoding="utf-8")
        written = read_device_file(tmp, str(out))
        if written.to_dict() != spec.to_dict():
            raise AttnscopeError(f"{out}: the rewritten preset does not read back as calibrated (not written)")
        tmp.replace(out)
    except OSError as exc:
        raise AttnscopeError(f"cannot write {out}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


def calibrate_file(data_file: str | Path, device: str | Path, out: str | Path | None = None,
                   gemm_dtype: str | None = None) -> tuple[DeviceSpec, list[Fit], Path]:  # fmt: skip
    """Read ``data_file``, calibrate ``device``, write the preset (to ``out``, default the device's own file)."""
    spec, fits = calibrate(read_csv(data_file), device, data_file, gemm_dtype)
    source = preset_path(device)
    target = Path(out) if out is not None else source
    return spec, fits, write_preset(spec, fits, source, target)
