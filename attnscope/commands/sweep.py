"""``attnscope sweep``, ``pareto``, ``plot`` and ``query``: design-space sweeps and their stores.

Usage::

    attnscope sweep SPEC --store FILE [--force] [--retry-errors] [--workers N | --dask-local N | --scheduler ADDR]
    attnscope pareto STORE --x area_mm2 --y latency_s [--color energy_j] [--plot out.png] [--csv front.csv]
    attnscope plot STORE --x seq_len --y latency_s [--y ...] [--group device,kernel] [--panel causal] --out f.png
    attnscope query STORE ["SELECT ..."] [--csv FILE | --parquet FILE]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from einsum.errors import AttnscopeError


def add_parser(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Register the sweep, pareto and query subcommands."""
    from attnscope.cli import at_least

    p = subparsers.add_parser(
        "sweep", help="run a design-space sweep into a results store (resumable)",
        description="Evaluate every point of a sweep spec not yet in the store. Rerunning resumes; "
        "each finished chunk of points is committed, so an interrupted sweep loses at most the chunks in flight.",
    )  # fmt: skip
    p.add_argument("spec", help="sweep spec (.yaml), e.g. examples/sweeps/fusemax-pe-buffer.yaml")
    p.add_argument("--store", required=True, help="SQLite results store (created if absent)")
    p.add_argument("--force", action="store_true", help="recompute points already in the store")
    p.add_argument("--retry-errors", action="store_true", help="recompute points stored with an error")
    p.add_argument("--workers", type=at_least(1), help="local worker processes (default: all cores; 1 = in-process)")
    p.add_argument(
        "--dask-local", type=at_least(1), metavar="N", help="run on a Dask LocalCluster of N worker processes"
    )
    p.add_argument("--scheduler", metavar="ADDR", help="run on a Dask cluster, e.g. tcp://HOST:8786")
    p.add_argument("--chunk-size", type=at_least(1), help="points per task (default: chosen from points and workers)")
    p.add_argument(
        "--task-timeout", type=float, metavar="SECONDS",
        help="a chunk running longer is taken from its worker (restarted) and run again, on the local pool and "
        "on Dask (default: 300 s, or 20x "
        "the slowest point so far times the chunk's points)",
    )  # fmt: skip
    p.add_argument(
        "--max-points", type=at_least(1), metavar="N",
        help="refuse sweeps of more points (default: the spec's sampling.max_points, else 1,000,000)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = subparsers.add_parser(
        "pareto", help="the Pareto front of a store: table, CSV and plot",
        description="Exactly the non-dominated points (failed and infeasible points left out) over --x and --y.",
    )  # fmt: skip
    p.add_argument("store", help="SQLite results store")
    p.add_argument("--x", required=True, help="objective column on the x axis, e.g. area_mm2")
    p.add_argument("--y", required=True, help="objective column on the y axis, e.g. latency_s")
    p.add_argument("--color", help="column that colours the front, e.g. energy_j")
    p.add_argument("--max", action="append", default=[], choices=["x", "y"], help="maximise x or y (default: minimise)")
    p.add_argument("--sweep", help="only this sweep's points (default: every point in the store)")
    p.add_argument("--where", help="extra SQL condition, e.g. \"model = 'BERT'\"")
    p.add_argument("--include-infeasible", action="store_true", help="also points with feasible = 0")
    p.add_argument("--plot", help="write the plot here (.png, .pdf, .svg)")
    p.add_argument("--csv", help="write the front's rows here")
    p.add_argument("--logx", action="store_true", help="log-scale x axis (default: where values span 20x or more)")
    p.add_argument("--logy", action="store_true", help="log-scale y axis (default: where values span 20x or more)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pareto)

    p = subparsers.add_parser(
        "plot", help="line plot of a store: y against x, one line per group (e.g. device x kernel)",
        description="Finished points only: a failed point leaves its line shorter. The first --group column picks "
        "the colour, the second the line style, the third the marker; --panel draws one subplot per value.",
    )  # fmt: skip
    p.add_argument("store", help="SQLite results store")
    p.add_argument("--x", required=True, help="column on the x axis, e.g. seq_len")
    p.add_argument("--y", required=True, action="append", help="column on the y axis, e.g. latency_s (repeat: rows)")
    p.add_argument("--group", default="", help="comma-separated columns, one line per value, e.g. device,kernel")
    p.add_argument("--panel", help="one subplot per value of this column, e.g. causal")
    p.add_argument("--sweep", help="only this sweep's points (default: every point in the store)")
    p.add_argument("--where", help="extra SQL condition, e.g. \"kernel != 'unfused'\"")
    p.add_argument("--logx", action="store_true", help="log-scale x axis")
    p.add_argument("--logy", action="store_true", help="log-scale y axis")
    p.add_argument("--title", help="figure title (default: the sweep and the plotted columns)")
    p.add_argument("--out", required=True, help="write the plot here (.png, .pdf, .svg)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plot)

    p = subparsers.add_parser(
        "query", help="run SQL on a store (read-only); print, or export CSV / Parquet",
        description="Tables: points (one row per point), sweeps, sweep_points; view results (sweep, idx, point).",
    )  # fmt: skip
    p.add_argument("store", help="SQLite results store")
    p.add_argument("sql", nargs="?", default="SELECT * FROM results ORDER BY sweep, idx", help="one SELECT statement")
    p.add_argument("--csv", help="write the rows to this CSV file instead of printing them")
    p.add_argument("--parquet", help="write the rows to this Parquet file (needs pyarrow)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_query)


def cmd_sweep(args: argparse.Namespace) -> int:
    from attnscope.cli import print_json
    from mappers.sweep.points import check_size
    from mappers.sweep.runner import make_executor, run_sweep
    from mappers.sweep.spec import read_sweep_file

    spec = read_sweep_file(args.spec)
    if args.chunk_size is not None and args.chunk_size < 1:
        raise AttnscopeError(f"--chunk-size: expected a positive number, got {args.chunk_size}")
    check_size(spec, args.max_points)  # before any worker starts
    try:
        with make_executor(args.workers, args.dask_local, args.scheduler, args.task_timeout) as executor:
            summary = run_sweep(
                spec, args.store, force=args.force, retry_errors=args.retry_errors, executor=executor,
                progress=not args.quiet, chunk_size=args.chunk_size, max_points=args.max_points,
            )  # fmt: skip
    except KeyboardInterrupt:  # on any executor, while starting, running or closing it
        print(f"attnscope: interrupted; finished points are in {args.store}: rerun to resume", file=sys.stderr)
        return 130
    if args.json:
        print_json({**vars(summary), "rate_points_per_s": summary.rate})
        return 0
    print(
        f"{summary.sweep}: {summary.unique} points ({summary.skipped} already stored, {summary.computed} computed, "
        f"{summary.errors} failed{f', {summary.by_others} computed by another run' if summary.by_others else ''}) "
        f"in {summary.seconds:.1f} s on {summary.executor}"
        + (f", {summary.rate:.0f} points/s" if summary.computed else "")
    )
    print(f"store: {summary.store}")
    if summary.corrupt:
        print(f"{summary.corrupt} stored point(s) failed their checksum (changed on disk since they were written) "
              "and were recomputed")  # fmt: skip
    if summary.errors:
        sql = "SELECT key, error FROM points WHERE status = 'error'"
        print(f'see the failures: attnscope query {summary.store} "{sql}"')
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from attnscope.cli import print_json, table
    from mappers.sweep.pareto import plot_front, store_front
    from mappers.sweep.store import Store, export

    extra = [args.color] if args.color else []
    maximize = ("x" in args.max, "y" in args.max)
    with Store.open(args.store, readonly=True) as store:
        front = store_front(store, (args.x, args.y), maximize, args.sweep, args.where, args.include_infeasible, extra)
        if args.plot:
            plot_front(store, front, args.plot, args.color, args.sweep, args.where, args.include_infeasible,
                       (args.logx or None, args.logy or None))  # fmt: skip
    _warn_corrupt(args.store, front.corrupt, "left out of the front")
    if args.csv:
        export(front.columns, front.rows, args.csv)
    shown = [c for c in ("key", args.x, args.y, *extra) if c in front.columns]
    shown += [c for c in front.columns if c not in shown and c in _axis_columns(front.columns)]
    if args.json:
        print_json(
            {"objectives": [args.x, args.y], "maximize": list(maximize), "candidates": front.candidates,
             "infeasible_left_out": front.infeasible,
             "front": [dict(zip(front.columns, r, strict=True)) for r in front.rows]}
        )  # fmt: skip
        return 0
    print(f"Pareto front: {len(front.rows)} of {front.candidates} points ({_sense(args.x, maximize[0])}, "
          f"{_sense(args.y, maximize[1])})")  # fmt: skip
    if not args.include_infeasible:
        print(f"{front.infeasible} infeasible point(s) left out (they do not fit the hardware; "
              "--include-infeasible keeps them)")  # fmt: skip
    print()
    idx = [front.columns.index(c) for c in shown]
    print(table([[_fmt(r[i]) for i in idx] for r in front.rows], shown))
    for flag, path in (("plot", args.plot), ("csv", args.csv)):
        if path:
            print(f"{flag}: {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from attnscope.cli import print_json
    from mappers.sweep.plot import plot_lines, read_lines
    from mappers.sweep.store import Store

    group = [c.strip() for c in args.group.split(",") if c.strip()]
    with Store.open(args.store, readonly=True) as store:
        lines = read_lines(store, args.x, args.y, group, args.panel, args.sweep, args.where)
        title = args.title
        if title is None:
            sql = "SELECT name FROM sweeps ORDER BY name"
            names = [args.sweep] if args.sweep else [r[0] for r in store.query(sql)[1]]
            title = f"{', '.join(names)}: {', '.join(args.y)} vs {args.x}"
    _warn_corrupt(args.store, lines.corrupt, "left out of the plot")
    counts = plot_lines(lines, args.out, (args.logx, args.logy), title)
    if args.json:
        print_json({"out": args.out, **counts})
        return 0
    print(f"plot: {args.out} ({counts['lines']} lines, {counts['points']} points, {counts['panels']} panel(s))")
    return 0


def _warn_corrupt(store: str, keys: Any, what: str) -> None:
    """Say on stderr which stored points fail their checksum (their values changed on disk)."""
    if keys:
        shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        print(f"attnscope: warning: {store}: {len(keys)} stored point(s) fail their checksum (their values changed "
              f"on disk since they were written; {what}): {shown}; rerun the sweep to recompute them",
              file=sys.stderr)  # fmt: skip


def _sense(column: str, maximize: bool) -> str:
    return f"{'max' if maximize else 'min'} {column}"


def _axis_columns(columns: list[str]) -> list[str]:
    from mappers.sweep.metrics import METRICS
    from mappers.sweep.store import BASE_COLUMNS

    return [c for c in columns if c not in BASE_COLUMNS and c not in METRICS and not c.startswith("util_")
            and c not in ("sweep", "idx")]  # fmt: skip


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def cmd_query(args: argparse.Namespace) -> int:
    from attnscope.cli import print_json, table
    from mappers.sweep.store import Store, export

    if args.csv and args.parquet:
        raise AttnscopeError("give either --csv or --parquet, not both")
    with Store.open(args.store, readonly=True) as store:
        columns, rows = store.query(args.sql)
        corrupt = store.corrupt()
    _warn_corrupt(args.store, corrupt, "their values may be among the rows")
    target = args.csv or args.parquet
    if target:
        kind = export(columns, rows, target)
        print(f"wrote {len(rows)} rows to {target} ({kind})", file=sys.stderr)
        return 0
    if args.json:
        print_json([dict(zip(columns, r, strict=True)) for r in rows])
        return 0
    print(table([[_fmt(v) for v in r] for r in rows], columns) if columns else "(no result)")
    return 0
