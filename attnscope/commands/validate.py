"""``attnscope measure``, ``attnscope calibrate`` and ``attnscope validate``: real kernels against the model.

``measure`` runs a sweep with the torch harness (validate.harness) and writes a measurement CSV;
``calibrate`` fits a device preset's efficiencies to that file's microbenchmark rows; ``validate`` writes the
predicted-vs-measured report. torch is imported only by ``measure``, when it runs.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from attnscope.cli import print_json, table
from einsum.errors import AttnscopeError


def add_parser(subparsers, parser_class) -> None:
    """Register measure, calibrate and validate."""
    p = subparsers.add_parser("measure", help="time torch kernels from a sweep spec (checked against float64 first)")
    p.add_argument("--sweep", default="cpu-ci", help="built-in sweep (cpu-ci, cpu-full, gpu-standard) or .yaml file")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--out", help="output CSV (default: DATA_DIR/<label>-<UTC date>.csv)")
    p.add_argument("--data-dir", default="validate/data", help="folder for the default output (validate/data)")
    p.add_argument("--label", help="device label for the file name, e.g. h100-sxm (default: from the device name)")
    p.add_argument("--ops", help="comma-separated subset of operations, e.g. matmul,sdpa")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_measure)

    p = subparsers.add_parser("calibrate", help="fit a device preset's efficiencies to microbenchmark rows")
    p.add_argument("--data", required=True, help="a measurement CSV (validate/data/...)")
    p.add_argument("--device", required=True, help="a device preset id or .yaml file")
    p.add_argument("--out", help="preset YAML to write (default: the device's own file)")
    p.add_argument("--gemm-dtype", help="dtype of the GEMM rows to fit when the file has several")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    p = subparsers.add_parser("validate", help="predicted vs measured: report.md and plots")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a measurement CSV (validate/data/...)")
    source.add_argument(
        "--published",
        action="store_true",
        help="the committed published figures (validate/data/published-*.csv): the two-table report, data used "
        "to design or calibrate vs data used only to validate",
    )
    p.add_argument("--device", help="device preset id or .yaml (default: from the file name or device name)")
    p.add_argument("--out", required=True, help="output folder for report.md and the figures")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def cmd_measure(args) -> int:
    from tqdm import tqdm

    from validate.harness import load_sweep, run_sweep, write_csv

    sweep = load_sweep(args.sweep)
    if args.ops:
        ops = tuple(x.strip() for x in args.ops.split(",") if x.strip())
        known = {c.op for c in sweep.cases}
        bad = [x for x in ops if x not in known]
        if bad:
            have = ", ".join(sorted(known))
            raise AttnscopeError(f"--ops: {', '.join(bad)} not in sweep {sweep.name}; it has {have}")
        sweep = sweep.only(ops)
    if importlib.util.find_spec("torch") is None:
        raise AttnscopeError("attnscope measure needs torch: pip install 'attnscope[validate]'")
    from validate.compare import device_label

    total = len(sweep.cases)
    with tqdm(total=total, desc=f"measure {sweep.name}", unit="case", disable=args.quiet, file=sys.stderr) as bar:

        def progress(label: str) -> None:
            bar.set_postfix_str(label[:60], refresh=False)
            bar.update(1)

        rows = run_sweep(sweep, args.device, progress=progress)
    label = args.label or device_label(rows[0].device_name) or _slug(rows[0].device_name)
    out = Path(args.out) if args.out else Path(args.data_dir) / f"{label}-{datetime.now(UTC):%Y-%m-%d}.csv"
    try:
        write_csv(rows, out)
    except OSError as exc:
        raise AttnscopeError(f"cannot write {out}: {exc.strerror}") from None
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "failed", "skipped")}
    if args.json:
        print_json({"out": str(out), "rows": len(rows), **counts, "device": rows[0].device_name})
        return 0
    print(f"wrote {out}: {len(rows)} rows ({counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped)"
          f" on {rows[0].device_name}")  # fmt: skip
    for r in rows:
        if r.status == "failed":
            print(f"  FAILED {r.op}/{r.backend} {r.dtype} {r.shape}: {r.reason}")
    return 0


def cmd_calibrate(args) -> int:
    from validate.calibrate import calibrate_file

    spec, fits, path = calibrate_file(args.data, args.device, args.out, args.gemm_dtype)
    if args.json:
        print_json({"device": spec.id, "out": str(path), "fits": [f.to_dict() for f in fits],
                    "calibration": spec.efficiency.to_dict()["calibration"]})  # fmt: skip
        return 0
    print(f"calibrated {spec.id} from {args.data}; wrote {path}\n")
    rows = [[f.key, f"{f.previous:g}", f"{f.value:g}", f"{f.rows} {f.dtype}",
             f"{f.mape_before:.1f}% -> {f.mape_after:.1f}%", f.note or "-"] for f in fits]  # fmt: skip
    print(table(rows, ["entry", "before", "after", "rows", "MAPE of those rows", "note"]))
    return 0


def cmd_validate(args) -> int:
    from validate.compare import write_report

    if args.published:
        return _validate_published(args)
    summary = write_report(args.data, args.out, args.device, figures=not args.no_figures)
    if args.json:
        print_json(summary)
        return 0
    print(f"wrote {summary['report']} ({summary['scored']} rows scored against {summary['device']})\n")
    rows = [[s["group"], s["n"], f"{s['mape_pct']:.1f}%", f"{s['max_error_pct']:.1f}%",
             f"{s['median_error_pct']:+.1f}%"] for s in summary["families"]]  # fmt: skip
    print(table(rows, ["family", "points", "MAPE", "max |error|", "median error"]))
    return 0


def _validate_published(args) -> int:
    from validate.published import write_published_report

    if args.device:
        raise AttnscopeError("--published scores every preset its figures name; drop --device")
    summary = write_published_report(args.out)
    if args.json:
        print_json(summary)
        return 0
    print(f"wrote {summary['report']}: {summary['figures']} published figures, {summary['in_sample']} in-sample "
          f"(design or calibration), {summary['scored']} validation-only scored, {summary['not_scored']} listed "
          "without a score\n")  # fmt: skip
    rows = [[g["device"], g["kernel"], g["direction"], g["n"], f"{g['mean_abs_error_pct']:.1f}%",
             f"{g['max_abs_error_pct']:.1f}%", f"{g['median_error_pct']:+.1f}%"]
            for g in summary["groups"]]  # fmt: skip
    print(table(rows, ["device", "kernel", "direction", "points", "mean |error|", "max |error|", "median error"]))
    return 0
