"""Line plots of a store: y columns against an x column, one line per group (e.g. device x kernel).

Only finished (``ok``) points with a value in x and in the plotted y are drawn; a failed point (``fa3`` on an
A100, an unfused kernel whose scores do not fit DRAM) leaves its line shorter, never a zero. The first group
column picks the colour and the (hollow) marker, so lines that coincide stay told apart, the second the line
style, the third the marker instead; ``panel`` draws one subplot per
value of a column (``causal``), and several y columns stack as rows of subplots. Axes are labelled with units
(:func:`mappers.sweep.metrics.axis_label`). matplotlib is imported only when drawing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from einsum.errors import AttnscopeError
from mappers.sweep.metrics import axis_label
from mappers.sweep.store import Store, StoreError, quote_identifier

_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class Lines:
    """The rows a plot draws: one per point, with the x, y, group and panel columns."""

    x: str
    ys: tuple[str, ...]
    group: tuple[str, ...]
    panel: str | None
    rows: list[dict[str, Any]]
    booleans: frozenset[str]  # columns that an axis of the stored sweeps filled with true/false
    corrupt: tuple[str, ...] = ()  # keys of points left out: their stored values fail their checksum

    def groups(self) -> list[tuple]:
        """Distinct group keys, in sorted order."""
        return sorted({tuple(r[g] for g in self.group) for r in self.rows}, key=_sort_key)

    def panels(self) -> list[Any]:
        """Distinct panel values (one None without a panel column)."""
        if self.panel is None:
            return [None]
        return sorted({r[self.panel] for r in self.rows}, key=_sort_key)

    def show(self, column: str, value: Any) -> str:
        """A value as a label shows it: names bare, numbers as column=value (true/false for boolean axes)."""
        if isinstance(value, str):
            return value
        if value is None:
            return f"{column}=n/a"
        if column in self.booleans and value in (0, 1):
            return f"{column}={'true' if value else 'false'}"
        return f"{column}={_compact(value)}"


def _sort_key(value: Any) -> tuple:
    items = value if isinstance(value, tuple) else (value,)
    return tuple((0, v, "") if isinstance(v, int | float) else (1, 0, str(v)) for v in items)


def read_lines(
    store: Store,
    x: str,
    ys: Sequence[str],
    group: Sequence[str] = (),
    panel: str | None = None,
    sweep: str | None = None,
    where: str | None = None,
) -> Lines:
    """The finished points' x, y, group and panel values (each point once; points whose stored values fail
    their checksum are left out and listed in ``corrupt``)."""
    have = store.columns()
    needed = [x, *ys, *group, *([panel] if panel else [])]
    for name in needed:
        if name not in have:
            shown = [c for c in have if c not in ("key", "status", "error", "inputs_json", "finished_at")]
            raise StoreError(f"{store.path}: no column {name!r}; columns: {', '.join(shown)}")
    table = "results" if sweep else "points"
    clauses, params = ["status = 'ok'", f"{quote_identifier(x)} IS NOT NULL"], []
    if sweep:
        clauses.append("sweep = ?")
        params.append(sweep)
    if where:
        clauses.append(f"({where})")
    select = ", ".join(quote_identifier(c) for c in dict.fromkeys(["key", *needed]))
    columns, rows = store.query(f"SELECT {select} FROM {table} WHERE {' AND '.join(clauses)}", params)
    if sweep and not store.query("SELECT 1 FROM sweeps WHERE name = ?", (sweep,))[1]:
        names = [r[0] for r in store.query("SELECT name FROM sweeps ORDER BY name")[1]]
        raise StoreError(f"{store.path}: no sweep {sweep!r}; sweeps: {', '.join(names) or 'none'}")
    unique = {r[0]: dict(zip(columns, r, strict=True)) for r in rows}
    corrupt = tuple(store.corrupt(unique))
    for key in corrupt:
        del unique[key]
    out = list(unique.values())
    for name in (x, *ys):
        texts = sorted({str(r[name]) for r in out if isinstance(r[name], str)})
        if texts:
            raise StoreError(f"{store.path}: column {name!r} holds names ({', '.join(texts[:4])}); plot a numeric "
                             "column, or use it as --group or --panel")  # fmt: skip
    return Lines(x, tuple(ys), tuple(group), panel, out, frozenset(_boolean_axes(store, sweep)), corrupt)


def _boolean_axes(store: Store, sweep: str | None) -> set[str]:
    sql = "SELECT spec_json FROM sweeps" + (" WHERE name = ?" if sweep else "")
    out = set()
    for (text,) in store.query(sql, (sweep,) if sweep else ())[1]:
        for name, axis in (json.loads(text or "{}").get("axes") or {}).items():
            values = axis.get("values") or []
            if values and all(isinstance(v, bool) for v in values):
                out.add(name)
    return out


def _compact(value: float) -> str:
    """512, 1K, 32K, 1M for sizes (K = 1024); other numbers in %g."""
    if float(value).is_integer():
        v = int(value)
        for unit, scale in (("M", 1 << 20), ("K", 1 << 10)):
            if v >= scale and v % scale == 0:
                return f"{v // scale}{unit}"
        return str(v)
    return f"{value:g}"


def plot_lines(
    lines: Lines, out: str | Path, log: tuple[bool, bool] = (False, False), title: str | None = None
) -> dict[str, int]:
    """Draw lines (module docstring for the styling); returns the counts of lines, points and panels drawn."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not lines.rows:
        raise AttnscopeError(f"nothing to plot: no finished point has a value in {lines.x}")
    groups, panels = lines.groups(), lines.panels()
    levels = [sorted({k[i] for k in groups}, key=_sort_key) for i in range(len(lines.group))]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(
        len(lines.ys), len(panels), squeeze=False, sharex=True, sharey="row",
        figsize=(4.6 * len(panels) + 2.4, 3.6 * len(lines.ys) + 0.6), layout="constrained",
    )  # fmt: skip
    handles: dict[str, Any] = {}
    drawn = 0
    for i, y in enumerate(lines.ys):
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            for key in groups:
                pts = sorted(
                    (float(r[lines.x]), float(r[y]))
                    for r in lines.rows
                    if tuple(r[g] for g in lines.group) == key
                    and (lines.panel is None or r[lines.panel] == panel)
                    and r[y] is not None
                )
                if not pts:
                    continue
                style = [levels[k].index(v) for k, v in enumerate(key)]
                label = ", ".join(lines.show(c, v) for c, v in zip(lines.group, key, strict=True)) or y
                (handle,) = ax.plot(
                    [p[0] for p in pts], [p[1] for p in pts], label=label, linewidth=1.4, markersize=4,
                    color=colours[style[0] % len(colours)] if style else colours[0],
                    linestyle=_STYLES[style[1] % len(_STYLES)] if len(style) > 1 else "-",
                    marker=_MARKERS[style[2 if len(style) > 2 else 0] % len(_MARKERS)] if style else "o",
                    markerfacecolor="none",
                )  # fmt: skip
                handles.setdefault(label, handle)
                drawn += len(pts)
            if log[0]:
                ax.set_xscale("log")
            if log[1]:
                ax.set_yscale("log")
            xs = sorted({float(r[lines.x]) for r in lines.rows})
            if len(xs) <= 12:
                ax.set_xticks(xs, [_compact(v) for v in xs])
                ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            if i == len(lines.ys) - 1:
                ax.set_xlabel(axis_label(lines.x))
            if j == 0:
                ax.set_ylabel(axis_label(y))
            if lines.panel is not None and i == 0:
                ax.set_title(lines.show(lines.panel, panel), fontsize="medium")
            ax.grid(True, which="major", alpha=0.3, linewidth=0.5)
    if len(handles) > 1 or lines.group:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize="small",
                   ncols=min(len(handles), 4), title=", ".join(lines.group) or None)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize="medium")
    try:
        fig.savefig(out, dpi=130)
    except OSError as exc:
        raise AttnscopeError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return {"lines": len(handles), "points": drawn, "panels": len(panels)}
