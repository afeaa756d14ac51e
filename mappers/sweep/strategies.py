"""Per-point mapping strategies: name -> how one point is mapped and costed.

A strategy takes plain data (the architecture, a registered cascade name, its rank sizes and the
strategy's validated parameters) and returns a :class:`~simulator.cost.CascadeCost`. Register more with
:func:`register_strategy` (e.g. a mapper search with a budget); a sweep spec names one under ``mapping``.

Registered here:

- ``fixed-binding``: the FuseMax-family mapping of :mod:`mappers.fusemax` (config ``binding``,
  ``arch`` or ``cascade``): P = P2 x P1 x P0, M = M1 x M0 with M0 = P0 = the 2-D array's width, the largest
  P1 whose query-row state fits the global buffer. Same numbers as ``fusemax_family``; the lowered cascade
  is cached per (cascade, sizes), so a sweep lowers each shape once per worker.

- ``cascade`` (a device strategy that takes spatial-array presets too): any cascade, a registered name or a
  ``.einsum`` file (parameter ``workload``, which an axis of that name sweeps), at one layer's attention shape of
  a zoo model, mapped onto each target by the pipeline's mappers (:func:`mappers.catalog.map_case`: the fused
  or multi-pass search on arrays, the kernel on devices); ``params`` sets the cascade's parameters
  (``window=1024,density=0.1``). A file's content is part of every point's key: editing it recomputes.

Device strategies (``point_kind = "device"``) evaluate each point on a *target*, a value of the sweep's
``device`` axis (:mod:`mappers.sweep.targets`), for one model of the zoo (:mod:`workloads.llm`) at one
sequence length, and return their metrics as a mapping (None where the model gives no figure: stored as
NULL, never as 0):

- ``sdpa``: the attention kernel of one layer of the model (its heads, K/V heads, head dim, causal mask,
  sliding window) on a device, by :func:`simulator.gpu.predict`: kernel ``auto`` (the model's default for the
  device and shape) or one of :data:`simulator.kernels.attention.KERNELS` (``fa2``, ``fa3``, ``unfused``...).
  A kernel the device cannot run (``fa3`` without warpgroup MMA) or a shape that does not fit raises the
  model's message, which the sweep records as that point's error. No energy: the GPU models give none.
- ``llm``: one forward pass of the whole model (all layers plus the LM head), prefill or decode, by
  :func:`simulator.roofline.model_rows`: on a device each kernel is a ``simulator.gpu`` prediction; on a
  spatial-array preset each Einsum group's time is its roofline bound (compulsory DRAM traffic), which a
  mapping can only exceed. No energy for either (the roofline model gives none).

``direction`` (``sdpa``, ``cascade``: ``fwd``, ``bwd``, ``fwd+bwd``; ``llm``: ``fwd``, ``fwd+bwd``) costs the
backward pass too (:mod:`mappers.direction`; ``llm``'s ``fwd+bwd`` is ``model_rows`` phase ``train``, on devices).
A decode step has no backward: a spec that fixes ``direction`` with ``phase: decode`` or an inference-only
kernel is refused naming both keys; a swept combination fails at its points with the model's message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from einsum.errors import AttnscopeError, RegistryError, SpecError
from einsum.lower import LoweredCascade, lower
from mappers.sweep.targets import Resolved
from simulator.cost import CascadeCost
from simulator.device import DTYPES
from simulator.kernels.attention import KERNELS as ATTENTION_KERNELS
from simulator.kernels.backward import DIRECTIONS
from simulator.specs import ArchSpec
from workloads import get_cascade


@dataclass(frozen=True)
class Param:
    """One parameter of a strategy (a spec sets it under ``mapping`` or sweeps it as an axis of that name)."""

    default: Any
    allowed: tuple[Any, ...] | None  # the values it may take; None = any positive integer
    doc: str
    validate: Callable[[Any], str | None] | None = None
    """Checks a value other than by a list (a workload name or file); returns what is wrong, or None."""

    def check(self, value: Any) -> str | None:
        """None if value is allowed, else what is allowed."""
        if self.validate is not None:
            return self.validate(value)
        if self.allowed is None:
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return None
            return f"got {value!r}; expected a positive integer"
        if any(value == a and type(value) is type(a) for a in self.allowed):
            return None
        return f"got {value!r}; allowed: {', '.join(map(_yaml_text, self.allowed))}"


def _yaml_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Strategy:
    """A registered way to map and cost one point."""

    name: str
    summary: str
    params: Mapping[str, Param]
    cascades: tuple[str, ...] | None  # the cascades it can map; None = any registered cascade; () = none
    evaluate: Callable[..., Any]
    """arch strategies: ``(arch, cascade, sizes, params) -> CascadeCost``; device strategies:
    ``(target: Resolved, model, seq_len, params) -> {metric: value or None}``."""
    point_kind: str = "arch"
    """``arch``: points are variants of the spec's ``arch``; ``device``: points run on the device axis's targets."""
    metrics: tuple[str, ...] = ()
    """Device strategies: the metric columns they fill, in report order (arch strategies: see metrics.py)."""
    arch_presets: bool = False
    """Device strategies: spatial-array presets may stand in the device axis too."""
    file_params: tuple[str, ...] = ()
    """Parameters whose values may be files (``.einsum``): read relative to the spec, their content keyed."""
    conflicts: Callable[[Mapping[str, Any]], list[tuple[tuple[str, ...], str]]] | None = None
    """Combinations of parameter values that cannot run: ``(keys involved, what is wrong)`` for the values
    given; a spec that fixes every key of one under ``mapping`` is refused (a swept one fails at its points)."""


_STRATEGIES: dict[str, Strategy] = {}
STRATEGIES: Mapping[str, Strategy] = MappingProxyType(_STRATEGIES)
"""Registered strategies by name."""


def register_strategy(strategy: Strategy) -> Strategy:
    """Add a strategy; names are never replaced."""
    if strategy.name in _STRATEGIES:
        raise RegistryError(f"mapping strategy {strategy.name!r} is already registered")
    _STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The strategy called name; a miss lists the registered ones."""
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise RegistryError(f"unknown mapping strategy {name!r}; registered: {', '.join(_STRATEGIES)}") from None


@lru_cache(maxsize=512)
def lowered_cascade(cascade: str, sizes: tuple[tuple[str, int], ...]) -> LoweredCascade:
    """A registered cascade lowered at sizes (cached: lowering costs as much as a fifth of a point)."""
    return lower(get_cascade(cascade).cascade, dict(sizes))


def _fixed_binding(arch: ArchSpec, cascade: str, sizes: Mapping[str, int], params: Mapping[str, Any]) -> CascadeCost:
    """mappers.fusemax.fusemax_family with the lowered cascade taken from the cache."""
    from mappers.fusemax import fusemax_family

    width = arch.array("pe_2d").shape[-1]
    lowered = lowered_cascade(cascade, tuple(sorted({**sizes, "M0": width}.items())))
    return fusemax_family(params["config"], arch, sizes, lowered=lowered).cost


register_strategy(
    Strategy(
        name="fixed-binding",
        summary="FuseMax-family tiling and binding (mappers.fusemax), largest P1 that fits the buffer",
        params={
            "config": Param(
                "binding", ("binding", "arch", "cascade"), "which FuseMax configuration's binding and schedule"
            )
        },
        cascades=("fusemax",),
        evaluate=_fixed_binding,
    )
)


# ------------------------------------------------------------------------------------------------ on devices

_DTYPES = ("auto", *DTYPES)
_KERNELS = ("auto", *ATTENTION_KERNELS)
_PHASE = Param("prefill", ("prefill", "decode"), "prefill: seq_len query and key tokens; decode: one query token "
               "per sequence against seq_len of context")  # fmt: skip
_BATCH = Param(1, None, "sequences per batch")
_DTYPE = Param("auto", _DTYPES, "data type; auto: bf16 where the device has it, else fp16, else fp32")
_DIRECTION = Param("fwd", DIRECTIONS, "fwd: the forward pass; bwd: the backward pass; fwd+bwd: a training step "
                   "(the forward pass, then the backward pass)")  # fmt: skip


def _inference_only(params: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """A backward pass of a decode step (phase decode, or the decode / CPU flash kernel): inference only."""
    if params.get("direction", "fwd") == "fwd":
        return []
    out = []
    if params.get("phase") == "decode":
        out.append((("direction", "phase"), f"direction {params['direction']} needs phase prefill: a decode step "
                    "(one new token against a KV cache) is inference only and has no backward pass"))  # fmt: skip
    if params.get("kernel") in ("decode", "cpu-flash"):
        out.append((("direction", "kernel"), f"direction {params['direction']} runs kernel fa2, fa3, unfused, math "
                    f"or auto; kernel {params['kernel']} is inference only"))  # fmt: skip
    return out


def _dtype(target: Resolved, dtype: str) -> str:
    from simulator.gpu import default_dtype

    return default_dtype(target.device) if dtype == "auto" else dtype


def _sdpa(target: Resolved, model: str, seq_len: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """The attention kernel of one layer of model on a device (simulator.gpu.predict)."""
    from simulator.gpu import predict
    from workloads.llm import layer_kernels
    from workloads.models import get_model

    kernels = layer_kernels(get_model(model), params["phase"], seq_len, params["batch"])
    shape = dict(next(k for k in kernels if k.kind == "attention").shape)
    if params["causal"] != "model":
        shape["causal"] = params["causal"]
    kernel = params["kernel"]
    if kernel == "decode" and shape["seq_q"] > 16:
        raise SpecError(
            f"sdpa: kernel decode runs a few query rows against a KV cache; this point has seq_q {shape['seq_q']} "
            "(use phase: decode, or another kernel)"
        )
    if kernel != "auto":
        shape["kernel"] = kernel
    if params["direction"] != "fwd":
        shape["direction"] = params["direction"]
    dtype = _dtype(target, params["dtype"])
    p = predict(target.device, "sdpa", dtype=dtype, **shape)
    return {
        "latency_s": p.time_s,
        "tflops": p.tflops,
        "flops": p.flops,
        "dram_bytes": p.hbm_bytes,
        "roofline_s": p.roofline_s,
        "bound": p.bound,
        "attn_kernel": p.kernel,
        "precision": dtype,
        "energy_j": None,  # the kernel models give no energy
    }


register_strategy(
    Strategy(
        name="sdpa",
        summary="attention kernel of one layer of a zoo model on a device (simulator.gpu.predict)",
        params={
            "kernel": Param("auto", _KERNELS, "attention kernel; auto: the model's default for the device and shape"),
            "causal": Param("model", ("model", True, False), "causal mask; model: as the model's layer has it"),
            "phase": _PHASE,
            "batch": _BATCH,
            "dtype": _DTYPE,
            "direction": _DIRECTION,
        },
        cascades=(),
        evaluate=_sdpa,
        point_kind="device",
        metrics=("latency_s", "tflops", "flops", "dram_bytes", "roofline_s", "bound", "attn_kernel", "precision",
                 "energy_j"),
        conflicts=_inference_only,
    )
)  # fmt: skip


def _llm(target: Resolved, model: str, seq_len: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """One forward pass of the whole model on a device or a spatial-array preset (simulator.roofline)."""
    from simulator.device import DTYPE_BYTES
    from simulator.roofline import model_rows
    from workloads.llm import kv_cache_bytes
    from workloads.models import get_model

    shape = get_model(model)
    phase, batch, dtype, kernel = params["phase"], params["batch"], params["dtype"], params["kernel"]
    if params["direction"] != "fwd":
        if phase != "prefill" or target.kind != "device":
            where = "" if target.kind == "device" else f"; {target.name} is a spatial-array preset"
            raise SpecError(f"llm: direction {params['direction']} (a training step: each kernel with its backward) "
                            f"is modelled for phase prefill on a device{where}")  # fmt: skip
        phase = "train"
    if target.kind == "device":
        study = model_rows(model, phase, seq_len, batch, device=target.device, dtype=_dtype(target, dtype),
                           kernel=None if kernel == "auto" else kernel)  # fmt: skip
        elem, capacity = DTYPE_BYTES[study.dtype], target.device.dram_bytes
    else:
        word = target.arch.word_bytes
        if kernel != "auto":
            raise SpecError(f"llm: kernel {kernel} applies to devices; {target.name} is a spatial-array preset "
                            "(its attention is the cascade's Einsums): use kernel: auto")  # fmt: skip
        if dtype != "auto" and DTYPE_BYTES[dtype] != word:
            raise SpecError(f"llm: dtype {dtype} has {DTYPE_BYTES[dtype]}-byte elements; {target.name} computes on "
                            f"{word}-byte words (word_bytes): use dtype: auto or a {word}-byte type")  # fmt: skip
        study = model_rows(model, phase, seq_len, batch, arch=target.arch_ref)
        words = target.arch.levels[0].capacity_words
        elem, capacity = word, None if words is None else words * word
    moe_layers = study.layers - study.dense_layers  # a MoE model's leading dense layers have rows of their own
    parts = [(r, moe_layers) for r in study.rows] + [(r, study.dense_layers) for r in study.dense_rows]
    parts += [(study.head, 1)] if study.head else []
    by_bound: dict[str, float] = {}
    for r, n in parts:
        by_bound[r.binding] = by_bound.get(r.binding, 0.0) + r.predicted_s * n
    flops = sum(r.flops * n for r, n in parts)
    attention = next((r for r in study.rows if r.kernel == "attention"), None)
    footprint = shape.params() * elem + kv_cache_bytes(shape, seq_len, batch, elem)
    return {
        "latency_s": study.model_s,
        "tokens_per_s": study.tokens_per_s,
        "tflops": flops / study.model_s / 1e12,
        "flops": flops,
        "dram_bytes": sum(r.bytes * n for r, n in parts),
        "roofline_s": sum(r.bound_s * n for r, n in parts),
        "bound": max(by_bound, key=by_bound.__getitem__),
        "attn_kernel": attention.detail.get("kernel") if attention is not None else None,
        "precision": study.dtype,
        "footprint_bytes": float(footprint),
        "fits_dram": None if capacity is None else float(footprint <= capacity),
        "energy_j": None,  # the roofline model gives no energy
    }


register_strategy(
    Strategy(
        name="llm",
        summary="one forward pass of a zoo model (prefill or decode) on a device or a spatial-array preset "
        "(simulator.roofline.model_rows)",
        params={
            "phase": _PHASE,
            "batch": _BATCH,
            "dtype": _DTYPE,
            "kernel": Param("auto", _KERNELS, "attention kernel on devices; auto: the model's default"),
            "direction": Param("fwd", ("fwd", "fwd+bwd"), "fwd: the phase's forward pass; fwd+bwd: a training "
                               "step, every kernel with its backward (phase prefill, devices only)"),
        },
        cascades=(),
        evaluate=_llm,
        point_kind="device",
        metrics=("latency_s", "tokens_per_s", "tflops", "flops", "dram_bytes", "roofline_s", "bound", "attn_kernel",
                 "precision", "footprint_bytes", "fits_dram", "energy_j"),
        arch_presets=True,
        conflicts=_inference_only,
    )
)  # fmt: skip


def _check_workload(value: Any) -> str | None:
    """A registered cascade, or a ``.einsum`` file (read and checked relative to the spec by the spec reader)."""
    from workloads.registry import CASCADES

    if not isinstance(value, str) or not value:
        return f"got {value!r}; expected a registered cascade or a .einsum file"
    if value in CASCADES or value.endswith(".einsum"):
        return None
    return f"unknown cascade {value!r}; registered: {', '.join(CASCADES)} (or a .einsum file)"


def _check_params(value: Any) -> str | None:
    from workloads.cases import parse_params

    if not isinstance(value, str):
        return f"got {value!r}; expected text such as window=1024,density=0.1 (empty: the declared defaults)"
    try:
        parse_params(value)
    except AttnscopeError as exc:
        return str(exc)
    return None


def _cascade(target: Resolved, model: str, seq_len: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """A cascade at one layer's attention shape of a zoo model, mapped onto the target (module docstring)."""
    from mappers.direction import map_direction
    from simulator.targets import load_target
    from workloads.cases import case_for_shape, parse_params
    from workloads.models import get_model

    shape = get_model(model)
    seq_q = 1 if params["phase"] == "decode" else None
    case = case_for_shape(params["workload"], shape, batch=params["batch"], seq=seq_len, seq_q=seq_q,
                          params=parse_params(params["params"]))  # fmt: skip
    if target.kind == "device":
        tgt = load_target(target.device, dtype=_dtype(target, params["dtype"]))
    else:
        if params["dtype"] != "auto":
            raise SpecError(
                f"cascade: dtype {params['dtype']} applies to devices; {target.name} is a spatial-array "
                "preset: use dtype: auto"
            )
        tgt = load_target(target.arch)
    d = map_direction(case, tgt, params["direction"])
    flops = getattr(d.detail, "flops", None)
    return {
        "latency_s": d.latency_s,
        "tflops": None if flops is None else flops / d.latency_s / 1e12,
        "dram_bytes": d.dram_bytes,
        "bound": d.bound,
        "utilization": d.utilization,
        "onchip_bytes": d.onchip_bytes,
        "spill_bytes": d.spill_bytes,
        "energy_j": d.energy_j,
        "feasible": float(d.feasible),
        "mapper": d.mapper,
        "attn_kernel": d.description,
        "precision": getattr(tgt, "dtype", f"{getattr(tgt.spec, 'word_bytes', 0)}-byte words"),
    }


register_strategy(
    Strategy(
        name="cascade",
        summary="any cascade (registered or .einsum) at a zoo model's attention shape, mapped onto a device or a "
        "spatial-array preset by the pipeline's mappers",
        params={
            "workload": Param("attention-1pass", None, "a registered cascade or a .einsum file", _check_workload),
            "params": Param("", None, "the cascade's parameters, e.g. window=1024,density=0.1", _check_params),
            "phase": _PHASE,
            "batch": _BATCH,
            "dtype": _DTYPE,
            "direction": _DIRECTION,
        },
        cascades=(),
        evaluate=_cascade,
        point_kind="device",
        metrics=("latency_s", "tflops", "dram_bytes", "bound", "utilization", "onchip_bytes", "spill_bytes",
                 "energy_j", "feasible", "mapper", "attn_kernel", "precision"),
        arch_presets=True,
        file_params=("workload",),
    )
)  # fmt: skip
