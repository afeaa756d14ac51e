"""``attnscope predict``, ``attnscope roofline`` and ``attnscope devices``: kernels and models on GPUs and edge
devices (and roofline reports on spatial-array presets)."""

from __future__ import annotations

import argparse

from einsum.errors import AttnscopeError
from simulator.gpu import DIRECTIONS, KERNELS, OPS
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
    p.add_argument(
        "--direction",
        choices=list(DIRECTIONS),
        help="sdpa: fwd (default), bwd (the backward pass) or fwd+bwd (a training step's attention)",
    )
    p.add_argument(
        "--workload",
        help="sdpa: any attention cascade, a registered name or a .einsum file (its own "
        "masks and ops set the kernel; the shape flags bind to its ranks B, H, G, P, M, E, F)",
    )
    p.add_argument("--param", default="", help="sdpa --workload: the cascade's parameters, e.g. window=1024")
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
    p.add_argument("--model", required=True, help="llama2-7b, llama3-8b, llama3-70b, mistral-7b, bert, trxl, t5, xlm, "
                   "or a Hugging Face config.json (examples/models/)")  # fmt: skip
    p.add_argument(
        "--phase",
        choices=["prefill", "decode", "train"],
        default="prefill",
        help="prefill, decode, or train (a device: each kernel's forward plus backward, attention --direction fwd+bwd)",
    )
    p.add_argument("--seq", type=_size, default=2048, help="prompt length (prefill) or context length (decode)")
    p.add_argument("--batch", type=_size, default=1)
    p.add_argument("--dtype", default=None, help="device dtype (default bf16, else fp16)")
    p.add_argument("--kernel", choices=list(KERNELS), help="attention kernel")
    p.add_argument(
        "--workload",
        help="the layer's attention as a cascade: a registered name or a .einsum file "
        "(mapped onto the target by `attnscope map`'s mappers; default: the model's dense attention)",
    )
    p.add_argument("--param", default="", help="the cascade's parameters, e.g. window=1024 (with --workload)")
    p.add_argument("--out", required=True, help="folder for report.md and roofline.png")
    p.add_argument("--no-plot", action="store_true", help="skip roofline.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_roofline)

    p = subparsers.add_parser("devices", help="list the device presets, or show one")
    p.add_argument("name", nargs="?", help="a device id or .yaml to show")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)


def cmd_predict(args) -> int:
    from attnscope.cli import print_json
    from simulator.device import load_device
    from simulator.gpu import default_dtype, predict

    spec = load_device(args.device)
    dtype = args.dtype or default_dtype(spec)
    if args.workload or args.param:
        if args.direction not in (None, "fwd"):
            raise AttnscopeError(f"--direction {args.direction} is modelled for the dense, causal and sliding-window "
                                 "sdpa shapes; drop --workload")  # fmt: skip
        pred = _predict_workload(args, spec, dtype)
        if args.json:
            print_json(pred.to_dict())
            return 0
        _print_prediction(args.op, pred, spec, dtype)
        return 0
    # each op's shape keywords come from the flags of the same name (sdpa's seq_q is --seq); batch defaults to 1
    # where the op has one dimension to spare
    flags = {"seq_q": "seq"}
    stray = sorted(
        "--" + flags.get(key, key).replace("_", "-")
        for key in {k for keys in OPS.values() for k in keys} - set(OPS[args.op])
        if getattr(args, flags.get(key, key), None) not in (None, False)
    )
    if stray:
        takes = ", ".join("--" + flags.get(k, k).replace("_", "-") for k in OPS[args.op])
        raise AttnscopeError(f"{', '.join(stray)} does not apply to --op {args.op}; it takes {takes}")
    shape = {key: getattr(args, flags.get(key, key), None) for key in OPS[args.op]}
    if args.op in ("sdpa", "gemm"):
        shape["batch"] = shape["batch"] or 1
    pred = predict(spec, args.op, dtype=dtype, **shape)
    if args.json:
        print_json(pred.to_dict())
        return 0
    _print_prediction(args.op, pred, spec, dtype)
    return 0


def _predict_workload(args, spec, dtype: str):
    """``predict --op sdpa --workload X``: the cascade through the pipeline on this device."""
    from attnscope.api import evaluate_case
    from einsum.errors import AttnscopeError
    from simulator.targets import load_target
    from workloads.cases import case_for_model, parse_params

    if args.op != "sdpa" or not args.workload:
        raise AttnscopeError("--workload (and --param) go with --op sdpa: the attention cascade to cost")
    fixed = [f"--{k}" for k in ("causal", "window") if getattr(args, k)]
    if fixed:
        raise AttnscopeError(f"--workload {args.workload} sets its own mask; drop {', '.join(fixed)}")
    if args.kernel not in (None, "fa2", "fa3"):
        raise AttnscopeError(f"--workload: the cascade's structure chooses its kernel; --kernel may fix fa2 or fa3, "
                             f"not {args.kernel}")  # fmt: skip
    missing = [f"--{k.replace('_', '-')}" for k in ("heads", "seq", "head_dim") if getattr(args, k) is None]
    if missing:
        raise AttnscopeError(f"--op sdpa --workload needs {', '.join(missing)}")
    case = case_for_model(args.workload, batch=args.batch or 1, heads=args.heads, kv_heads=args.kv_heads or args.heads,
                          head_dim=args.head_dim, seq=args.seq_kv or args.seq, seq_q=args.seq,
                          params=parse_params(args.param))  # fmt: skip
    options = {"kernel": args.kernel} if args.kernel else {}
    return evaluate_case(case, load_target(spec, dtype=dtype), **options).detail


def _print_prediction(op: str, pred, spec, dtype: str) -> None:
    from attnscope.cli import table

    print(f"{op} ({pred.kernel}) on {spec.name}, {dtype}")
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


def cmd_roofline(args) -> int:
    from attnscope.cli import print_json
    from attnscope.reports import attention_row
    from simulator.roofline import model_rows, write_report

    attention, note = None, ""
    if args.workload:
        from einsum.errors import AttnscopeError

        if args.kernel:
            raise AttnscopeError("--kernel and --workload: the cascade's structure chooses its kernel; drop --kernel")
        attention, note = attention_row(args.workload, args.device or args.arch, dtype=args.dtype,
                                        param=args.param, phase=args.phase)  # fmt: skip
    elif args.param:
        from einsum.errors import AttnscopeError

        raise AttnscopeError("--param sets a cascade's parameters: give the cascade with --workload")
    study = model_rows(args.model, args.phase, args.seq, args.batch, device=args.device, arch=args.arch,
                       dtype=args.dtype, kernel=args.kernel, attention=attention, attention_note=note)  # fmt: skip
    paths = write_report(study, args.out, plot=not args.no_plot)
    from workloads.models import print_model_notes

    print_model_notes(args.model)
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
