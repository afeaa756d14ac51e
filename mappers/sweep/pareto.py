"""Pareto fronts of stored sweeps: exactly the non-dominated points, as rows, CSV and a labelled plot.

Point a dominates b when a is no worse in every objective and better in at least one (objectives are
minimised unless listed as maximised). Equal points do not dominate each other, so duplicates on the front
are all kept. Rows with a missing objective are left out; so are failed points, rows whose values fail their
checksum (changed on disk: :class:`Front` lists them) and, unless asked for, infeasible ones (``feasible = 0``;
device-sweep points have no ``feasible`` and are kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from einsum.errors import AttnscopeError
from mappers.sweep.metrics import axis_label
from mappers.sweep.store import Store, StoreError, intact, quote_identifier


def pareto_front(values: Any, maximize: Sequence[bool] = ()) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of an (n, k) array.

    >>> pareto_front([[1, 5], [2, 2], [3, 3], [2, 2], [4, 1]]).tolist()
    [0, 1, 3, 4]
    """
    v = np.array(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"expected an (n, k) array of objective values, got shape {v.shape}")
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64)
    if np.isnan(v).any():
        raise ValueError("objective values must not be NaN")
    signs = np.array([-1.0 if m else 1.0 for m in maximize] + [1.0] * (v.shape[1] - len(maximize)))
    v = v * signs
    order = np.lexsort(v.T[::-1])  # lexicographic: a point's dominators all come before it
    front = np.empty_like(v)
    count = 0
    keep = []
    for i in order:
        p = v[i]
        f = front[:count]
        if count and np.any(np.all(f <= p, axis=1) & np.any(f < p, axis=1)):
            continue
        front[count] = p
        count += 1
        keep.append(i)
    return np.sort(np.array(keep, dtype=np.int64))


@dataclass(frozen=True)
class Front:
    """A store's front: the candidate count and the front rows (all columns), sorted by the first objective."""

    columns: list[str]
    rows: list[tuple]
    candidates: int
    objectives: tuple[str, ...]
    maximize: tuple[bool, ...]
    infeasible: int = 0
    """Points left out because they do not fit the hardware (``feasible = 0``), when not included."""
    corrupt: tuple[str, ...] = ()
    """Keys of the points left out because their stored values fail their checksum (changed on disk)."""

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def _candidates(
    store: Store,
    needed: Sequence[str],
    sweep: str | None,
    where: str | None,
    include_infeasible: bool,
    corrupt: list[str] | None = None,
) -> tuple[list[str], list[tuple]]:
    """The finished rows with every needed column; rows that fail their checksum are left out (their keys
    appended to corrupt)."""
    have = store.columns()
    for name in needed:
        if name not in have:
            numeric = [c for c in have if c not in ("key", "status", "error", "inputs_json", "finished_at")]
            raise StoreError(f"{store.path}: no column {name!r}; columns: {', '.join(numeric)}")
    table = "results" if sweep else "points"
    clauses = ["status = 'ok'"] + [f"{quote_identifier(c)} IS NOT NULL" for c in needed]
    params: list[Any] = []
    if sweep:
        clauses.append("sweep = ?")
        params.append(sweep)
    if where:
        clauses.append(f"({where})")
    if not include_infeasible and "feasible" in have:
        clauses.append("COALESCE(feasible, 1) = 1")  # NULL: a point without the notion (device sweeps)
    columns, rows = store.query(f"SELECT * FROM {table} WHERE {' AND '.join(clauses)}", params)
    if sweep and not rows and not store.query("SELECT 1 FROM sweeps WHERE name = ?", (sweep,))[1]:
        names = [r[0] for r in store.query("SELECT name FROM sweeps ORDER BY name")[1]]
        raise StoreError(f"{store.path}: no sweep {sweep!r}; sweeps: {', '.join(names) or 'none'}")
    good = [r for r in rows if intact(columns, r)]
    if corrupt is not None and len(good) < len(rows):
        at = columns.index("key")
        corrupt.extend(dict.fromkeys(r[at] for r in rows if not intact(columns, r)))
    return columns, good


def _infeasible(store: Store, needed: Sequence[str], sweep: str | None, where: str | None) -> list[tuple]:
    """The stored points that would be candidates but do not fit the hardware (``feasible = 0``)."""
    if "feasible" not in store.columns():
        return []
    columns, every = _candidates(store, needed, sweep, where, include_infeasible=True)
    i = columns.index("feasible")
    return [r for r in every if r[i] == 0]


def store_front(
    store: Store,
    objectives: Sequence[str],
    maximize: Sequence[bool] = (),
    sweep: str | None = None,
    where: str | None = None,
    include_infeasible: bool = False,
    extra: Sequence[str] = (),
) -> Front:
    """The non-dominated stored points over objectives (columns); extra columns must exist too."""
    corrupt: list[str] = []
    columns, rows = _candidates(store, [*objectives, *extra], sweep, where, include_infeasible, corrupt)
    idx = [columns.index(o) for o in objectives]
    try:
        values = np.array([[float(r[i]) for i in idx] for r in rows], dtype=float).reshape(len(rows), len(idx))
    except (TypeError, ValueError):
        raise StoreError(f"{store.path}: the columns {', '.join(objectives)} must hold numbers") from None
    keep = pareto_front(values, maximize)
    front = sorted((rows[i] for i in keep), key=lambda r: tuple(float(r[i]) for i in idx))
    left_out = 0 if include_infeasible else len(_infeasible(store, [*objectives, *extra], sweep, where))
    senses = tuple(maximize) + (False,) * (len(idx) - len(maximize))
    return Front(columns, front, len(rows), tuple(objectives), senses, left_out, tuple(corrupt))


LOG_SPAN = 20.0
"""An axis whose positive values span at least this ratio (max / min) is drawn on a log scale by default."""


def spans_decades(values: Sequence[Any]) -> bool:
    """Whether positive, finite ``values`` spread over at least :data:`LOG_SPAN` (a log axis shows them)."""
    v = np.array([float(x) for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v)) and bool(np.all(v > 0)) and float(v.max() / v.min()) >= LOG_SPAN


def plot_front(
    store: Store,
    front: Front,
    out: str | Path,
    color: str | None = None,
    sweep: str | None = None,
    where: str | None = None,
    include_infeasible: bool = False,
    log: tuple[bool | None, bool | None] = (None, None),
    title: str | None = None,
) -> None:
    """Scatter every candidate in grey, infeasible points (when left out of the front) as crosses, and the front
    on top (coloured by color); axes labelled with units, log-scaled (``log`` None: where values span
    :data:`LOG_SPAN` or more)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = front.objectives[:2]
    columns, rows = _candidates(store, [x, y, *([color] if color else [])], sweep, where, include_infeasible)
    ix, iy = columns.index(x), columns.index(y)
    fig, ax = plt.subplots(figsize=(7.0, 4.8), layout="constrained")
    ax.scatter([r[ix] for r in rows], [r[iy] for r in rows], s=9, c="0.75", label=f"evaluated points ({len(rows)})",
               zorder=1, linewidths=0)  # fmt: skip
    shown = list(rows)
    if not include_infeasible:
        bad = _infeasible(store, [x, y], sweep, where)
        if bad:
            ax.scatter([r[ix] for r in bad], [r[iy] for r in bad], s=14, marker="x", c="tab:orange", linewidths=0.8,
                       zorder=1, label=f"infeasible, not on the front ({len(bad)})")  # fmt: skip
            shown += bad
    fx, fy = front.column(x), front.column(y)
    ax.step(fx, fy, where="post", color="0.3", linewidth=0.8, zorder=2)
    if color:
        points = ax.scatter(fx, fy, c=front.column(color), cmap="viridis", s=28, edgecolors="black", linewidths=0.4,
                            zorder=3, label=f"Pareto front ({len(front.rows)})")  # fmt: skip
        fig.colorbar(points, ax=ax, label=axis_label(color))
    else:
        ax.scatter(fx, fy, c="tab:red", s=28, edgecolors="black", linewidths=0.4, zorder=3,
                   label=f"Pareto front ({len(front.rows)})")  # fmt: skip
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    for axis, forced, i in (("x", log[0], ix), ("y", log[1], iy)):
        if forced or (forced is None and spans_decades([r[i] for r in shown])):
            getattr(ax, f"set_{axis}scale")("log")
    ax.grid(True, which="both", alpha=0.3, linewidth=0.5)
    ax.legend(loc="best", fontsize="small")
    if title is None:
        names = [sweep] if sweep else [r[0] for r in store.query("SELECT name FROM sweeps ORDER BY name")[1]]
        title = f"{', '.join(names) or Path(store.path).name}: Pareto front of {y} vs {x}"
    ax.set_title(title, fontsize="medium")
    try:
        fig.savefig(out, dpi=130)
    except OSError as exc:
        raise AttnscopeError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
