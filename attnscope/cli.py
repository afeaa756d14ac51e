"""The ``attnscope`` command line: a thin layer over :mod:`attnscope.api`.

Bad input exits with status 2 and a message naming what is at fault; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import zipfile
from collections.abc import Sequence

import numpy as np

from einsum.errors import AttnscopeError
from workloads.registry import parse_shape


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors like every other user error (exit 2, one message)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        raise SystemExit(_fail(f"{self.prog}: {message}"))


def _fail(message: str) -> int:
    print(f"attnscope: error: {message}", file=sys.stderr)
    return 2


def at_least(least: int):
    """An argparse type: a whole number >= ``least`` (anything else is a usage error, exit 2, saying so)."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
        return value

    whole.__name__ = f"integer >= {least}"
    return whole


def print_json(data) -> None:
    """Print data as indented JSON (numpy scalars allowed)."""
    _print_json(data)


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table: first and last columns left-aligned, the others right-aligned."""
    return _table(rows, header)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=_json_default))


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(type(obj).__name__)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:{'<' if i in (0, len(widths) - 1) else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _shape_text(sizes: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sizes.items())


# -- commands -------------------------------------------------------------------------------------------------


def cmd_cascades(args) -> int:
    from attnscope import api

    rows = api.list_cascades(parse_shape(args.shape))
    if args.json:
        _print_json(rows)
        return 0
    print("Registered cascades (passes over M; ops at the shape shown: each cascade's defaults and --shape)\n")
    main_ranks = ("B", "H", "G", "M", "P", "E", "F")
    print(
        _table(
            [
                [r["name"], r["passes"], r["einsums"], f"{r['ops']:,}",
                 " ".join(f"{k}={v}" for k, v in r["shape"].items() if k in main_ranks), r["summary"]]
                for r in rows
            ],
            ["name", "passes", "einsums", "ops", "shape", "summary"],
        )
    )  # fmt: skip
    return 0


def cmd_show(args) -> int:
    from attnscope import api

    info = api.describe_cascade(args.name, parse_shape(args.shape), args.rank, args.direction, args.form)
    if args.json:
        _print_json(info)
        return 0
    print(f"{info['name']}: {info['summary']}")
    print(f"source: {info['source']}")
    print(f"shape: {_shape_text(info['shape'])}\n")
    if info.get("gradients"):  # --direction bwd
        grads = ", ".join(f"{g['tensor']}[{','.join(g['ranks'])}] of {x}" for x, g in info["gradients"].items())
        print(f"gradients: {grads}; seeds: {', '.join(f'{s} of {o}' for o, s in info['seeds'].items())}\n")
    print(info["text"].rstrip())
    if info["pass_note"]:
        print(f"\n{info['pass_note']}")
    if info["passes"] is not None:
        print(f"\npasses over {info['pass_rank']}: {info['passes']}")
        if info["carried_between_passes"]:
            print(f"  carried from one pass to a later one: {', '.join(info['carried_between_passes'])}")
    rows = []
    for name, ops in info["ops"].items():
        ops_text = ", ".join(f"{k} {v:,}" for k, v in sorted(ops.items())) or "-"
        rows.append([name, info["einsum_passes"].get(name, "-"), f"{info['tensor_elements'][name]:,}", ops_text])
    print()
    print(_table(rows, ["einsum", "pass", "out elements", "ops"]))
    print("\ntotal: " + ", ".join(f"{k} {v:,}" for k, v in info["total_ops"].items()))
    return 0


def cmd_run(args) -> int:
    from attnscope import api

    out = args.out if args.out.endswith(".npz") else args.out + ".npz"  # numpy.savez's own rule, said up front
    if os.path.isdir(out) or not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        why = "is a directory" if os.path.isdir(out) else "has no such parent directory"
        return _fail(f"cannot write {out}: it {why}; --out names an .npz file in an existing directory")
    given = {}
    if args.inputs:
        try:
            with np.load(args.inputs, allow_pickle=False) as data:
                given = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            return _fail(f"cannot read inputs {args.inputs}: {exc}; give an .npz written by numpy.savez")
    used, outputs, sizes = api.run_cascade(
        args.name, parse_shape(args.shape), given, args.seed, args.direction, args.form
    )
    arrays = {**used, **outputs} if args.save_inputs else outputs
    try:
        np.savez(out, **arrays)
    except OSError as exc:
        return _fail(f"cannot write {out}: {exc.strerror}")
    if args.json:
        _print_json({"out": out, "shape": sizes, "outputs": {k: list(v.shape) for k, v in outputs.items()}})
    else:
        for name, arr in outputs.items():
            print(f"{name}: shape {arr.shape}, written to {out}")
    return 0


def cmd_reproduce(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    jobs = args.jobs if args.jobs is not None else os.cpu_count() or 1
    if jobs > 1:  # the workers' forkserver imports and warms up the study while this process imports it
        from mappers.workers import pool_context
        from validate.fusemax import WORKER_PRELOAD

        pool_context(WORKER_PRELOAD)
    from validate.fusemax.report import progress_steps, reproduce
    from validate.fusemax.study import SEQ_LENS, STUDY_MODELS

    models = _choices(args.models, STUDY_MODELS, "--models")
    seqs = _choices(args.seqs, tuple(SEQ_LENS), "--seqs")
    with tqdm(total=progress_steps(models, seqs), desc="fusemax study", unit="cell", disable=args.quiet,
              file=sys.stderr) as bar:  # fmt: skip

        def progress(label: str, steps: int) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(steps)

        summary = reproduce(Path(args.out), models, seqs, progress, figures=not args.no_figures, jobs=jobs)
    if args.json:
        _print_json(summary)
        return 0
    print(f"wrote {args.out}/report.md and the CSVs and figures beside it in {summary['seconds']:.1f} s")
    if summary["cells_compared"]:
        print(f"{summary['cells_within_tolerance']} of {summary['cells_compared']} published cells within tolerance")
    for label, values in summary["headline"].items():
        print(f"  {label:28s} " + "  ".join(f"{k} {v:.3g}" for k, v in values.items()))
    return 0


def cmd_arch_show(args) -> int:
    from simulator.specs import load_arch

    spec = load_arch(args.name)
    if args.json:
        _print_json({**spec.to_dict(resolved=True), "area_um2": spec.area_um2(), "leakage_w": spec.leakage_w()})
        return 0
    print(f"{spec.name}: {spec.source}")
    print(f"clock {spec.clock_hz / 1e6:g} MHz, {spec.word_bytes}-byte words, compat {spec.compat.label}")
    t = spec.technology
    supply = "nominal" if t is None or t.voltage_v is None else f"{t.voltage_v:g} V"
    where = f"technology {t.node_nm} nm, {t.datatype}, {t.dram}, supply {supply}" if t else "no technology"
    print(f"{where} (figures the spec does not give come from it)\n" if t else f"{where}: every figure as given\n")
    rows = [
        [lv.name, "unbounded" if lv.capacity_words is None else f"{lv.capacity_words:,}", lv.instances,
         "-" if lv.bandwidth_bytes_per_s is None else f"{lv.bandwidth_bytes_per_s / 2**30:g}",
         f"{lv.read_energy_pj:g}/{lv.write_energy_pj:g} per {lv.access_width_words}"]
        for lv in spec.levels
    ]  # fmt: skip
    print(_table(rows, ["level", "words", "instances", "GiB/s", "pJ read/write"]))
    print()
    rows = [[a.name, "x".join(map(str, a.shape)), a.pe_count, ", ".join(o.name for o in a.ops)] for a in spec.arrays]
    print(_table(rows, ["array", "shape", "PEs", "ops"]))
    print(f"\narea {spec.area_um2() / 1e8:.4g} cm^2, leakage {spec.leakage_w():.4g} W")
    return 0


def _choices(text: str | None, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    if not text:
        return allowed
    chosen = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in chosen if x not in allowed]
    if bad:
        raise AttnscopeError(f"{flag}: unknown {', '.join(bad)}; allowed: {', '.join(allowed)}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnscope", description="Attention algorithms as Extended-Einsum cascades.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("cascades", help="list the registered cascades")
    p.add_argument("--shape", default="", help="rank sizes for the op counts, e.g. M=4K,E=128")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cascades)

    cascade = sub.add_parser("cascade", help="show or run one cascade")
    csub = cascade.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = csub.add_parser("show", help="the Einsums as text and their analyses")
    p.add_argument("name", help="a registered cascade or a .einsum file")
    p.add_argument("--shape", default="", help="rank sizes, e.g. B=1,H=2,M=128,P=64,E=32,F=32")
    p.add_argument("--rank", help="rank the pass analysis walks (default: the cascade's key rank, e.g. M)")
    p.add_argument(
        "--direction",
        choices=("fwd", "bwd"),
        default="fwd",
        help="fwd: the cascade; bwd: its backward cascade, derived (einsum.backward)",
    )
    p.add_argument(
        "--form",
        choices=("autodiff", "flash", "recompute"),
        default="autodiff",
        help="with --direction bwd: reverse mode over the Einsums, FlashAttention-2's recomputation, or reverse "
        "mode recomputing the per-key values (the scores) instead of saving them",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    p = csub.add_parser("run", help="execute with the numpy reference interpreter")
    p.add_argument("name", help="a registered cascade or a .einsum file")
    p.add_argument("--shape", default="", help="rank sizes, e.g. B=1,H=2,M=128,P=64,E=32,F=32")
    p.add_argument("--inputs", help=".npz with input arrays named by tensor (others are drawn from --seed)")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--out", required=True, help="output .npz file (arrays named by tensor; .npz is added if missing)")
    p.add_argument("--save-inputs", action="store_true", help="also store the inputs used in --out")
    p.add_argument(
        "--direction",
        choices=("fwd", "bwd"),
        default="fwd",
        help="bwd: the forward pass, then its derived backward cascade (outputs dQ, dK, ...; seeds dAV, ...)",
    )
    p.add_argument("--form", choices=("autodiff", "flash", "recompute"), default="autodiff", help="the backward's form")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    arch = sub.add_parser("arch", help="hardware presets")
    asub = arch.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = asub.add_parser("show", help="a preset or YAML file, validated")
    p.add_argument("name", help="a preset name or a .yaml file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_arch_show)

    p = sub.add_parser("reproduce", help="reproduce a published study")
    p.add_argument("study", choices=["fusemax"], help="the study (FuseMax, MICRO 2024)")
    p.add_argument("--out", required=True, help="output folder for CSVs, figures and report.md")
    p.add_argument("--models", help="comma-separated subset of BERT,TrXL,T5,XLM")
    p.add_argument("--seqs", help="comma-separated subset of 1K,4K,16K,64K,256K,1M")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--jobs", type=at_least(1),
                   help="worker processes for the study's pieces (default: all cores; 1 = in-process)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reproduce)

    for module in _command_modules():
        module.add_parser(sub, _Parser)
    return parser


def _command_modules():
    """Modules of attnscope.commands that contribute subcommands, in name order."""
    import importlib
    import pkgutil

    import attnscope.commands as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, "add_parser"):
            yield module


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    except AttnscopeError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C in a command that keeps nothing to resume (sweeps say how to resume)
        print("attnscope: interrupted; nothing was written after the interruption", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if exc.filename is not None:
            return _fail(f"cannot write {exc.filename}: its reader has gone (broken pipe)")
        # whoever read the output stopped reading (``| head``): nothing more to say, and nowhere to say it
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a command killed by SIGPIPE, the shell's convention
    except OSError as exc:  # a file-system fault anywhere (missing folder, read-only place, disk full): name it
        where = exc.filename if exc.filename is not None else "a file"
        return _fail(f"cannot use {where}: {exc.strerror or exc}; check the path and that it is writable")


def run() -> None:
    """The console script: :func:`main`, then leave without the interpreter's teardown where nothing is pending.

    Once Numba has loaded its kernels, tearing the interpreter down (LLVM's and the modules' destructors) takes
    0.2-0.35 s on a 2-core machine, a sixth of a whole ``attnscope map``. So when ``main`` has returned and only the
    main thread is left (no pool or writer thread to wait for), the streams are flushed, the ``atexit`` handlers
    run (logging, ``weakref.finalize`` clean-ups such as temporary folders, multiprocessing and Dask shutdowns),
    and the process exits with ``main``'s status. Anything else takes the ordinary exit, and so does
    ``python -m attnscope.cli`` (a profiler or tracer wrapping the module writes its results after ``main``). Both
    set the collector up for a command (:func:`mappers.workers.tune_gc`); ``main`` alone, as tests call it, does not."""
    import atexit
    import threading

    from mappers.workers import tune_gc

    tune_gc()
    rc = main()
    if threading.active_count() > 1:
        sys.exit(rc)
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe (``| head``) or stream: nothing more can be written there
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    atexit._run_exitfuncs()
    os._exit(0 if rc is None else rc)


if __name__ == "__main__":
    from mappers.workers import tune_gc

    tune_gc()
    sys.exit(main())
