"""``attnscope compare-attention``: every attention variant vs sequence length on a device or an architecture."""

from __future__ import annotations

import argparse
import os
import sys

from workloads.registry import parse_size

_PARAMS = (
    ("window", "sliding-window span in tokens (sliding-window, streaming-llm, duo-attention)"),
    ("sinks", "attention-sink tokens (streaming-llm, duo-attention)"),
    ("splits", "split-K factor (decode-splitk)"),
    ("block", "key block in tokens (block-sparse, moba, s2-attention)"),
)


def _size(text: str) -> int:
    try:
        return parse_size(text, "size")
    except Exception as exc:  # argparse turns ArgumentTypeError into a usage error
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in (0, 1]")
    return value


def add_parser(sub, parser_class) -> None:
    from attnscope.cli import at_least

    p = sub.add_parser(
        "compare-attention",
        help="latency, energy, DRAM bytes and footprint of every attention variant vs sequence length",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="a GPU / edge device id (see `attnscope devices`) or a device .yaml")
    target.add_argument("--arch", help="a spatial-array preset or an architecture .yaml")
    p.add_argument("--model", required=True, help="a zoo model: llama2-7b, llama3-8b, llama3-70b, mistral-7b, "
                   "bert, trxl, t5, xlm (heads, K/V heads, head dim), or a Hugging Face config.json")  # fmt: skip
    p.add_argument("--seq", default="1K,4K,16K,64K,256K,1M", help="comma-separated sequence lengths (K = 2^10)")
    p.add_argument(
        "--variants",
        help="comma-separated registered attention cascades or .einsum files (default: every registered one)",
    )
    p.add_argument("--batch", type=_size, default=1, help="batch (default 1)")
    p.add_argument("--dtype", help="device dtype (default bf16, else fp16)")
    p.add_argument("--direction", choices=("fwd", "bwd", "fwd+bwd"), default="fwd",
                   help="fwd: the forward pass; bwd: the backward pass; fwd+bwd: a training step (devices: the GPU "
                   "backward kernels; arrays: the derived backward cascade)")  # fmt: skip
    for name, text in _PARAMS:
        p.add_argument(f"--{name}", type=_size, help=text)
    p.add_argument("--density", type=_fraction, help="kept fraction of key blocks (block-sparse, moba)")
    p.add_argument("--out", required=True, help="folder for compare.csv, report.md and compare.png")
    p.add_argument("--no-plot", action="store_true", help="skip compare.png")
    p.add_argument("--jobs", type=at_least(1),
                   help="worker processes for the cells (default: all cores on a spatial array, whose cells run "
                   "searches; 1 on a device, whose cells take milliseconds; 1 = in-process)")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import asdict

    from attnscope.cli import print_json, table
    from attnscope.compare_attention import compare_attention, parse_seqs, write_comparison
    from workloads.models import print_model_notes

    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    params = {k: getattr(args, k) for k in ("window", "sinks", "splits", "block", "density")}
    jobs = args.jobs if args.jobs is not None else (1 if args.device is not None else os.cpu_count() or 1)
    study = compare_attention(model=args.model, seqs=parse_seqs(args.seq), device=args.device, arch=args.arch,
                              variants=variants, batch=args.batch, dtype=args.dtype, direction=args.direction,
                              params={k: v for k, v in params.items() if v is not None}, jobs=jobs,
                              progress=sys.stderr.isatty())  # fmt: skip
    paths = write_comparison(study, args.out, plot=not args.no_plot)
    print_model_notes(args.model)
    if args.json:
        files = {k: str(v) for k, v in paths.items()}
        rows = [asdict(r) for r in study.rows]
        print_json({"target": study.target, "model": study.model, "direction": study.direction,
                    "seconds": study.seconds, "rows": rows,
                    "files": files, "native": study.native, "notes": list(study.notes)})  # fmt: skip
        return 0
    rows = [
        [r.variant, r.seq, r.passes, "-" if r.latency_s is None else f"{r.latency_s * 1e3:.4g}", r.bound,
         "-" if r.dram_bytes is None else f"{r.dram_bytes / 1e6:.4g}", r.status if r.status != "ok" else ""]
        for r in study.rows
    ]  # fmt: skip
    print(table(rows, ["variant", "seq", "passes", "ms", "bound", "DRAM MB", "status"]))
    print(f"\n{len(study.variants)} variants x {len(study.seqs)} lengths on {study.target} in {study.seconds:.2f} s; "
          "wrote " + ", ".join(str(p) for p in paths.values()))  # fmt: skip
    return 0
