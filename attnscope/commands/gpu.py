"""``attnscope predict``, ``attnscope roofline`` and ``attnscope devices``: kernels and models on GPUs and edge
devices (and roofline reports on spatial-array presets)."""

from __future__ import annotations

import argparse

from simulator.gpu import KERNELS, OPS
from workloads.registry import parse_size

_GEMM = ("m", "n", "k")


def _size(text: str) -> int:
    try:
        return parse_size(text, "size")
    except Exception as exc:  # argparse turns ArgumentTypeError into a usage error
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers, parser_class) -> None:
    """Register predict, roofline and devices."""
    p = subparsers.add_parser("predict", help="predict one kernel on a device (time, TFLOP/s, bytes, bound, tiles)")
    p.add_argument("--device", required=True, help="a device id (see `attnscope devices`) or a device .yaml")
    p.add_argument("--op", required=True, choices=list(OPS))
    p.add_argument("--dtype", default=None, help="fp32, tf32, fp16, bf16 or fp8 (default: bf16, else fp16)")
    p.add_argument("--kernel", choices=list(KERNELS), help="sdpa kernel")
    p.add_argument("--batch", type=_size, help="sdpa batch; gemm batch count")
    p.add_argument("--heads", type=_size, help="sdpa query heads")
    p.add_argument("--kv-heads", type=_size, help="sdpa K/V heads (GQA/MQA); default = heads")
    p.add_argument("--seq", type=_size, help="sdpa query length (and key length unless --seq-kv)")
    p.add_argument("--seq-kv", type=_size, help="sdpa key/value length (decode: the context)")
    p.add_argument("--head-dim", type=_size, help="sdpa head dimension")
    p.add_argument("--causal", action="store_true", help="sdpa causal mask")
    p.add_argument("--window", type=_size, help="sdpa sliding-window span")
    for name in _GEMM:
        p.add_argument(f"--{name}", type=_size, help=f"gemm {name.upper()}")
    p.add_argument("--nbytes", type=_size, help="copy: bytes copied")
    p.add_argument("--elements", type=_size, help="exp: elements")
    p.add_argument("--rows", type=_size, help="softmax / broadcast_add rows")
    p.add_argument("--cols", type=_size, help="softmax / broadcast_add columns")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser("roofline", help="roofline report of one model layer on a device or architecture")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="a device id or a device .yaml")
    target.add_argument("--arch", help="a spatial-array preset or an architecture .yaml")
    p.add_argument("--model", required=True, help="llama2-7b, llama3-8b, llama3-70b, mistral-7b, bert, trxl, t5, xlm")
    p.add_argument("--phase", choices=["prefill", "decode"], default="prefill")
    p.add_argument("--seq", type=_size, default=2048, help="prompt length (prefill) or context length (decode)")
    p.add_argument("--batch", type=_size, default=1)
    p.add_argument("--dtype", default=None, help="device dtype (default bf16, else fp16)")
    p.add_argument("--kernel", choices=list(KERNELS), help="attention kernel")
    p.add_argument("--out", required=True, help="folder for report.md and roofline.png")
    p.add_argument("--no-plot", action="store_true", help="skip roofline.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_roofline)

    p = subparsers.add_parser("devices", help="list the device presets, or show one")
    p.add_argument("name", nargs="?", help="a device id or .yaml to show")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)


def cmd_predict(args) -> int:
    from attnscope.cli import print_json, table
    from simulator.device import load_device
    from simulator.gpu import default_dtype, predict

    spec = load_device(args.device)
    dtype = args.dtype or default_dtype(spec)
    # each op's shape keywords come from the flags of the same name (sdpa's seq_q is --seq); batch defaults to 1
    # where the op has one dimension to spare
    flags = {"seq_q": "seq"}
    shape = {key: getattr(args, flags.get(key, key), None) for key in OPS[args.op]}
    if args.op in ("sdpa", "gemm"):
        shape["batch"] = shape["batch"] or 1
    pred = predict(spec, args.op, dtype=dtype, **shape)
    if args.json:
        print_json(pred.to_dict())
        return 0
    print(f"{args.op} ({pred.kernel}) on {spec.name}, {dtype}")
    print(f"  time      {pred.time_s * 1e6:,.2f} us   (roofline bound {pred.roofline_s * 1e6:,.2f} us)")
    print(f"  TFLOP/s   {pred.tflops:,.1f}   ({pred.flops / 1e9:,.3f} GFLOP)")
    print(f"  DRAM      {pred.hbm_bytes / 1e6:,.3f} MB")
    print(f"  bound     {pred.bound}")
    tiles = ", ".join(f"{k}={v}" for k, v in pred.tiles.items() if not isinstance(v, dict))
    if tiles:
        print(f"  mapping   {tiles}")
    if pred.parts:
        rows = [[p.kernel, f"{p.time_s * 1e6:,.2f}", p.bound, f"{p.hbm_bytes / 1e6:,.2f}"] for p in pred.parts]
        print()
        print(table(rows, ["kernel", "us", "bound", "MB"]))
    return 0


def cmd_roofline(args) -> int:
    from attnscope.cli import print_json
    from simulator.roofline import model_rows, write_report

    study = model_rows(args.model, args.phase, args.seq, args.batch, device=args.device, arch=args.arch,
                       dtype=args.dtype, kernel=args.kernel)  # fmt: skip
    paths = write_report(study, args.out, plot=not args.no_plot)
    if args.json:
        print_json({**study.summary(), "files": {k: str(v) for k, v in paths.items()}})
        return 0
    print(f"{study.model} {study.phase} on {study.target}: layer {study.layer_s * 1e3:.4g} ms, "
          f"model {study.model_s * 1e3:.4g} ms, {study.tokens_per_s:,.0f} tokens/s")  # fmt: skip
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_devices(args) -> int:
    from attnscope.cli import print_json, table
    from simulator.device import DEVICES, load_device

    if args.name:
        spec = load_device(args.name)
        if args.json:
            print_json(spec.to_dict())
            return 0
        print(f"{spec.name} ({spec.id}, {spec.kind}): {spec.source}")
        for key, value in spec.to_dict().items():
            if key not in ("references", "source", "name", "id", "kind"):
                print(f"  {key}: {value}")
        return 0
    specs = [load_device(name) for name in sorted(DEVICES)]
    if args.json:
        print_json([s.to_dict() for s in specs])
        return 0
    rows = [
        [s.id, s.kind, s.sm_count, f"{s.tensor_tflops.get('bf16', s.tensor_tflops.get('fp16', 0)):g}",
         f"{s.dram_bytes_per_s / 1e9:g}", f"{s.efficiency.gemm:g}", s.name]
        for s in specs
    ]  # fmt: skip
    print(table(rows, ["id", "kind", "SMs", "bf16 TF", "DRAM GB/s", "gemm eff", "name"]))
    return 0
