"""Kernel-level predictions on GPUs, edge SoCs and CPUs: one entry point, :func:`predict`.

``predict(device, op, dtype=..., **shape)`` maps the op onto the device's spatial machine (tensor cores as the
2-D array, SFU and FP32 lanes as 1-D arrays, registers / shared memory / L2 / DRAM as levels, CTAs as spatial
tiles over the SMs) and returns a :class:`KernelPrediction`. The models are in :mod:`simulator.kernels`; their
assumptions are in each module's docstring and in ``docs/bench-gpu.md``.

>>> p = predict("h100-sxm", "gemm", m=8192, n=8192, k=8192)
>>> p.bound, 600 < p.tflops < 989
('tensor', True)
>>> predict("h100-sxm", "sdpa", batch=1, heads=8, kv_heads=8, seq_q=4096, seq_kv=4096, head_dim=128,
...         kernel="fa3").tiles["block_m"]
128
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from typing import Any

from einsum.cascade import Cascade
from einsum.errors import AttnscopeError, SpecError
from simulator.device import DeviceSpec, load_device
from simulator.kernels.attention import DECODE_KEYS, DECODE_QUERIES, KERNELS, predict_decode, predict_unfused
from simulator.kernels.backward import DIRECTIONS, combine, predict_fused_bwd, predict_unfused_bwd
from simulator.kernels.cpu import predict_cpu_flash
from simulator.kernels.elementwise import predict_copy, predict_elementwise, predict_exp, predict_softmax
from simulator.kernels.gemm import predict_gemm
from simulator.kernels.machine import KernelPrediction, machine
from simulator.kernels.variants import predict_case, predict_variant
from workloads.attention import causal
from workloads.cases import Case, Workload, make_case
from workloads.registry import get_cascade

__all__ = ["DIRECTIONS", "KERNELS", "OPS", "KernelPrediction", "default_dtype", "predict"]

OPS: Mapping[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k", "batch"),
    "copy": ("nbytes",),
    "exp": ("elements",),
    "softmax": ("rows", "cols"),
    "broadcast_add": ("batch", "rows", "cols"),
    "sdpa": (
        "batch",
        "heads",
        "kv_heads",
        "seq_q",
        "seq_kv",
        "head_dim",
        "causal",
        "kernel",
        "window",
        "variant",
        "params",
        "direction",
    ),
}
"""Ops and the shape keywords each takes."""

_REQUIRED = {
    "gemm": ("m", "n", "k"),
    "copy": ("nbytes",),
    "exp": ("elements",),
    "softmax": ("rows", "cols"),
    "broadcast_add": ("batch", "rows", "cols"),
    "sdpa": ("batch", "heads", "seq_q", "head_dim"),
}


def default_dtype(spec: DeviceSpec) -> str:
    """bf16 where the device has it, else fp16, else fp32."""
    for dtype in ("bf16", "fp16"):
        if dtype in spec.tensor_tflops:
            return dtype
    return "fp32"


def predict(device: str | DeviceSpec, op: str, *, dtype: str = "bf16", **shape: Any) -> KernelPrediction:
    """Predict one kernel (or, for unfused attention, its chain of kernels) on a device.

    ops: ``gemm`` (m, n, k, batch=1), ``copy`` (nbytes), ``exp`` (elements), ``softmax`` (rows, cols),
    ``broadcast_add`` (batch, rows, cols: a (rows, cols) operand added to every batch slice),
    ``sdpa`` (batch, heads, kv_heads=heads, seq_q, seq_kv=seq_q, head_dim, causal=False, kernel=..., window=None)
    with kernel one of ``fa2``, ``fa3``, ``unfused``, ``decode``, ``math``, ``cpu-flash`` (default: fa3 on Hopper,
    fa2 on other GPUs, decode for a few queries against a long cache, cpu-flash on CPUs). ``fa2``/``fa3`` cost
    the registered cascade of the shape (``attention-1pass``, ``attention-1pass-causal``, ``sliding-window``
    with ``window``, which needs ``causal``; their grouped-query forms when kv_heads < heads) with
    :func:`simulator.kernels.variants.predict_case`. ``variant`` names a registered attention cascade (``gqa``,
    ``sliding-window``, ``moba``, ... with ``params`` such as window or density), whose masks and ops then set
    the kernel.
    """
    spec = load_device(device)
    if op not in OPS:
        raise SpecError(f"unknown op {op!r}; allowed: {', '.join(OPS)}")
    unknown = [k for k in shape if k not in OPS[op]]
    if unknown:
        raise SpecError(f"{op}: unknown shape keyword(s) {', '.join(unknown)}; {op} takes {', '.join(OPS[op])}")
    missing = [k for k in _REQUIRED[op] if shape.get(k) is None]
    if missing:
        raise SpecError(f"{op}: missing {', '.join(missing)}; {op} takes {', '.join(OPS[op])}")
    if op == "gemm":
        return predict_gemm(
            machine(spec, dtype), m_=shape["m"], n=shape["n"], k=shape["k"], batch=shape.get("batch", 1)
        )
    if op == "copy":
        return predict_copy(machine(spec, dtype), nbytes=shape["nbytes"])
    if op == "exp":
        return predict_exp(machine(spec, dtype), elements=shape["elements"])
    if op == "softmax":
        return predict_softmax(machine(spec, dtype), rows=shape["rows"], cols=shape["cols"])
    if op == "broadcast_add":
        m = machine(spec, dtype)
        b, rows, cols = shape["batch"], shape["rows"], shape["cols"]
        return predict_elementwise(m, elements=b * rows * cols, reads=2, kernel="broadcast_add",
                                   read_bytes=m.elem_bytes * (1 + 1 / b), broadcast=True)  # fmt: skip
    return _sdpa(spec, dtype, shape)


def _sdpa(spec: DeviceSpec, dtype: str, shape: Mapping[str, Any]) -> KernelPrediction:
    direction = shape.get("direction") or "fwd"
    if direction not in DIRECTIONS:
        raise SpecError(f"sdpa: unknown direction {direction!r}; allowed: {', '.join(DIRECTIONS)}")
    if direction != "fwd":
        return _sdpa_train(spec, dtype, shape, direction)
    if shape.get("variant") is not None:
        fixed = [k for k in ("causal", "window") if shape.get(k)]
        if fixed:
            raise SpecError(f"sdpa: variant {shape['variant']!r} sets its own mask; drop {', '.join(fixed)}")
        keys = ("batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "kernel", "params")
        return predict_variant(spec, shape["variant"], dtype=dtype, **{k: shape.get(k) for k in keys})
    s = _shape(shape)
    for key in ("batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim"):
        if not (isinstance(s[key], int) and s[key] >= 1):
            raise SpecError(f"sdpa: {key} must be a positive integer, got {s[key]!r}")
    if s["window"] is not None and not (isinstance(s["window"], int) and s["window"] >= 1):
        raise SpecError(f"sdpa: window must be a positive integer or None, got {s['window']!r}")
    if s["heads"] % s["kv_heads"]:
        raise SpecError(f"sdpa: heads ({s['heads']}) must be a multiple of kv_heads ({s['kv_heads']}) for GQA/MQA")
    if s["seq_q"] > s["seq_kv"] and s["causal"]:
        raise SpecError(f"sdpa: causal attention needs seq_q <= seq_kv, got {s['seq_q']} > {s['seq_kv']}")
    kernel = shape.get("kernel") or _default_kernel(spec, s)
    if kernel not in KERNELS:
        raise SpecError(f"sdpa: unknown kernel {kernel!r}; allowed: {', '.join(KERNELS)}")
    m = machine(spec, dtype, legacy_mma=kernel == "fa2")
    if kernel == "cpu-flash":
        return predict_cpu_flash(m, s)
    if kernel in ("fa2", "fa3"):
        pred = predict_case(spec, sdpa_case(s), dtype=dtype, kernel=kernel)
        return replace(pred, kernel=kernel)
    if kernel == "decode":
        return predict_decode(m, s)
    return predict_unfused(m, kernel, s)


def _sdpa_train(spec: DeviceSpec, dtype: str, shape: Mapping[str, Any], direction: str) -> KernelPrediction:
    """The backward pass (or forward and backward) of a dense, causal or sliding-window sdpa shape."""
    if shape.get("variant") is not None:
        raise SpecError(f"sdpa: direction {direction} is modelled for the dense, causal and sliding-window sdpa "
                        f"shapes (fa2, fa3, unfused, math); drop variant {shape['variant']!r}")  # fmt: skip
    fwd = _sdpa(spec, dtype, {**shape, "direction": "fwd"})  # validates the shape and picks the kernel
    kernel = shape.get("kernel") or _default_kernel(spec, _shape(shape))
    if kernel not in ("fa2", "fa3", "unfused", "math"):
        raise SpecError(f"sdpa: kernel {kernel} has no backward pass; direction {direction} runs fa2, fa3, unfused "
                        "or math (a decode step or the CPU flash kernel is inference only)")  # fmt: skip
    s = _shape(shape)
    m = machine(spec, dtype, legacy_mma=kernel == "fa2")
    bwd = predict_fused_bwd(m, kernel, s) if kernel in ("fa2", "fa3") else predict_unfused_bwd(m, kernel, s)
    return bwd if direction == "bwd" else combine(replace(fwd, kernel=kernel), bwd)


def _shape(shape: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "batch": shape["batch"],
        "heads": shape["heads"],
        "kv_heads": shape.get("kv_heads") or shape["heads"],
        "seq_q": shape["seq_q"],
        "seq_kv": shape.get("seq_kv") or shape["seq_q"],
        "head_dim": shape["head_dim"],
        "causal": bool(shape.get("causal", False)),
        "window": shape.get("window"),
    }


def _default_kernel(spec: DeviceSpec, s: Mapping[str, Any]) -> str:
    if spec.kind == "cpu":
        return "cpu-flash"
    if s["seq_q"] <= DECODE_QUERIES and s["seq_kv"] >= DECODE_KEYS:
        return "decode"
    return "fa3" if spec.tensor_instruction == "wgmma" else "fa2"


def sdpa_case(s: Mapping[str, Any]) -> Case:
    """The registered cascade an sdpa shape runs on the fused kernels: ``attention-1pass``, its causal form,
    or ``sliding-window`` (window W, causal); with kv_heads < heads the same masks over grouped K/V heads
    (``gqa``, and its text with the causal or window mask of the others)."""
    if s["window"] is not None and not s["causal"]:
        raise SpecError(
            f"sdpa: window={s['window']} needs causal=True on the fused kernels (the sliding-window cascade is causal: "
            "each query sees its last window keys)"
        )
    name = "sliding-window" if s["window"] else "attention-1pass-causal" if s["causal"] else "attention-1pass"
    shape = {"B": s["batch"], "H": s["heads"], "P": s["seq_q"], "M": s["seq_kv"], "E": s["head_dim"],
             "F": s["head_dim"]}  # fmt: skip
    params = {"W": s["window"]} if s["window"] else None
    if s["kv_heads"] == s["heads"]:
        return make_case(name, shape, params=params)
    shape["G"] = s["kv_heads"]
    if name == "attention-1pass":
        return make_case("gqa", shape)
    return make_case(_grouped(s["window"] is not None), shape, params=params)


def sdpa_shape(case: Case) -> dict[str, Any] | None:
    """The sdpa shape (``batch``, ``heads``, ``kv_heads``, ``seq_q``, ``seq_kv``, ``head_dim``, ``causal``,
    ``window``) whose fused kernels run exactly ``case`` (:func:`sdpa_case` of it gives the same cascade at the
    same sizes), or None: the shapes the backward kernels cost (``mappers.direction``)."""
    sizes = case.sizes
    if sizes.get("E") != sizes.get("F"):
        return None
    base = {"batch": case.batch, "heads": case.heads, "kv_heads": case.kv_heads, "seq_q": case.seq_q,
            "seq_kv": case.seq_kv, "head_dim": case.head_dim}  # fmt: skip
    windows = [None] + ([sizes["W"]] if "W" in sizes else [])
    for causal_, window in [(False, None)] + [(True, w) for w in windows]:
        s = {**base, "causal": causal_, "window": window}
        try:
            cand = sdpa_case(s)
        except AttnscopeError:
            continue
        if cand.cascade.text() == case.cascade.text() and dict(cand.sizes) == dict(sizes):
            return s
    return None


@cache
def _grouped(window: bool) -> Workload:
    """``gqa`` with the causal mask (and the window of ``sliding-window``)."""
    text = causal(get_cascade("gqa").text, "m1*M0+m0")
    name = "gqa-causal"
    if window:
        name = "gqa-sliding-window"
        mask = "where(m1*M0+m0 <= p + M - P, QK[b,g,r,m1,m0,p], -inf)"
        assert mask in text
        text = text.replace(
            mask, "where(m1*M0+m0 <= p + M - P, where(m1*M0+m0 > p + M - P - W, QK[b,g,r,m1,m0,p], -inf), -inf)"
        ).replace("= -inf\n", "= -1e30\n")
        text = text.replace("partition H = G * R", "param W = 4096\npartition H = G * R")
    cascade = Cascade.from_text(text, name=name, origin=f"<sdpa {name}>")
    return Workload(name, cascade, "grouped-query attention with the sdpa mask", "simulator.gpu.sdpa_case")


def calibrate_gemm(device: str | DeviceSpec, *, m: int, n: int, k: int, tflops: float, dtype: str = "bf16") -> float:
    """The GEMM efficiency at which the model reproduces a measured GEMM (TFLOP/s) at that shape.

    This is how the presets' ``efficiency.gemm`` (``efficiency.gemm_fp8`` for an fp8 GEMM) is derived from a
    GEMM microbenchmark (bisection on the monotone model); it never looks at attention timings.
    """
    from simulator.device import with_efficiency

    spec = load_device(device)
    cal = spec.efficiency.calibration
    provenance = {"data_file": cal.data_file, "date": cal.date, "method": cal.method}
    lo, hi = 0.05, 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        trial = with_efficiency(spec, {"gemm_fp8" if dtype == "fp8" else "gemm": mid}, provenance)
        if predict(trial, "gemm", dtype=dtype, m=m, n=n, k=k).tflops < tflops:
            lo = mid
        else:
            hi = mid
    if hi >= 1.0 - 1e-6:
        raise SpecError(f"{spec.id}: {tflops} TFLOP/s at {m}x{n}x{k} is above what the model reaches at efficiency 1")
    return round(0.5 * (lo + hi), 4)
