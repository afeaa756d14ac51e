"""Roofline bounds and reports: per-kernel FLOPs, bytes, arithmetic intensity, bound and predicted time.

Two kinds of target share one report:

* a **device** (:mod:`simulator.device`): ceilings are the dense tensor peak of the dtype, the FP32-lane peak,
  the exp (SFU) rate, and the DRAM and L2 bandwidth slopes; each kernel's time is the kernel model's
  prediction (:func:`simulator.gpu.predict`), never below its roofline bound;
* a **spatial-array architecture** (:mod:`simulator.specs`): ceilings are the 2-D array's MAC rate, the 1-D
  array's op rate and the DRAM (and, where given, global-buffer) bandwidth; each Einsum group's time is its
  roofline bound with compulsory DRAM traffic (a mapping found by the mapper can only be slower).

``model_rows`` builds the rows for one layer of a model in the zoo (:mod:`workloads.llm`) and the whole-model
summary; ``write_report`` writes ``report.md`` and ``roofline.png`` (matplotlib, imported lazily).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from einsum.errors import AttnscopeError, SpecError
from einsum.lower import lower
from simulator.device import DTYPE_BYTES, DeviceSpec, load_device
from simulator.kernels.attention import KERNELS
from simulator.kernels.elementwise import predict_elementwise
from simulator.kernels.machine import KernelPrediction, machine
from workloads.llm import (
    LayerKernel,
    experts_touched,
    head_kernel,
    kv_cache_bytes,
    layer_cascade,
    layer_kernels,
    layer_sizes,
    mla_form,
    tokens_per_step,
)
from workloads.model_shape import ModelShape
from workloads.models import get_model


@dataclass(frozen=True)
class Ceiling:
    """A horizontal (compute) or sloped (bandwidth) roof."""

    name: str
    value: float  # FLOP/s (or op/s) for compute, bytes/s for bandwidth
    kind: str  # compute | bandwidth
    unit: str  # what value counts


@dataclass(frozen=True)
class RooflineRow:
    """One kernel (device) or Einsum group (architecture) of a layer."""

    kernel: str
    einsums: tuple[str, ...]
    flops: float  # useful FLOPs (an FMA counts 2)
    bytes: float  # DRAM bytes the prediction moves (compulsory traffic for architectures)
    exp_ops: float  # special-function evaluations
    bound_s: float  # roofline bound
    predicted_s: float  # model prediction (= bound for architectures)
    binding: str  # the ceiling or model term that sets the time
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def intensity(self) -> float:
        """FLOPs per DRAM byte."""
        return self.flops / self.bytes if self.bytes else math.inf

    @property
    def tflops(self) -> float:
        """Attained TFLOP/s."""
        return self.flops / self.predicted_s / 1e12 if self.predicted_s else 0.0


def device_ceilings(spec: DeviceSpec, dtype: str) -> list[Ceiling]:
    """Datasheet roofs of a device for dtype."""
    return [
        Ceiling(f"tensor {dtype}", spec.tensor_peak_flops(dtype), "compute", "FLOP/s"),
        Ceiling("FP32 lanes", spec.fp32_tflops * 1e12, "compute", "FLOP/s"),
        Ceiling("exp (SFU)", spec.exp_per_s(), "compute", "exp/s"),
        Ceiling("DRAM", spec.dram_bytes_per_s, "bandwidth", "B/s"),
        Ceiling("L2", spec.l2_bytes_per_s, "bandwidth", "B/s"),
    ]


def arch_ceilings(arch: Any) -> list[Ceiling]:
    """Roofs of a spatial-array architecture (an :class:`simulator.specs.ArchSpec`)."""
    two = sum(a.pe_count for a in arch.arrays if a.kind == "2d")
    one = sum(a.pe_count for a in arch.arrays if a.kind == "1d")
    out = [Ceiling("2-D array (MAC)", 2.0 * two * arch.clock_hz, "compute", "FLOP/s")]
    if one:
        out.append(Ceiling("1-D array", one * arch.clock_hz, "compute", "op/s"))
    dram = arch.levels[0].bandwidth_bytes_per_s
    out.append(Ceiling(f"DRAM ({arch.levels[0].name})", dram or math.inf, "bandwidth", "B/s"))
    if len(arch.levels) > 1 and arch.levels[1].bandwidth_bytes_per_s:
        out.append(Ceiling(arch.levels[1].name, arch.levels[1].bandwidth_bytes_per_s, "bandwidth", "B/s"))
    return out


# ------------------------------------------------------------------------------------------------ rows


def _device_row(
    spec: DeviceSpec, dtype: str, k: LayerKernel, kernel: str | None, train: bool = False
) -> tuple[RooflineRow, KernelPrediction]:
    """A kernel's row; ``train``: its forward and backward kernels (a GEMM's input- and weight-gradient GEMMs,
    attention's backward pass, an elementwise map's backward reading its upstream gradient too), as one row."""
    from simulator.gpu import predict
    from simulator.kernels.backward import combine

    if k.kind == "gemm":
        p = predict(spec, "gemm", dtype=dtype, **k.shape)
        if train:  # dX = dY W^T (m x k, reducing n), dW = X^T dY (k x n, reducing m)
            m, n, kk, b = k.shape["m"], k.shape["n"], k.shape["k"], k.shape.get("batch", 1)
            for grad in ({"m": m, "n": kk, "k": n}, {"m": kk, "n": n, "k": m}):
                p = combine(p, predict(spec, "gemm", dtype=dtype, batch=b, **grad))
    elif k.kind == "attention":
        shape = dict(k.shape)
        if kernel:
            shape["kernel"] = kernel
        p = predict(spec, "sdpa", dtype=dtype, direction="fwd+bwd" if train else "fwd", **shape)
    else:
        m = machine(spec, dtype)
        p = predict_elementwise(m, elements=k.shape["elements"], reads=k.shape["reads"], kernel=k.name,
                                sfu=k.shape["sfu"])  # fmt: skip
        if train:
            p = combine(p, predict_elementwise(m, elements=k.shape["elements"], reads=k.shape["reads"] + 1,
                                               kernel=f"{k.name}-bwd", sfu=k.shape["sfu"]))  # fmt: skip
    row = RooflineRow(
        kernel=k.name,
        einsums=k.einsums,
        flops=p.flops,
        bytes=p.hbm_bytes,
        exp_ops=p.exp_ops,
        bound_s=p.roofline_s,
        predicted_s=p.time_s,
        binding=p.bound,
        detail={"kernel": p.kernel, "tiles": dict(p.tiles)},
    )
    return row, p


def _arch_row(arch: Any, k: LayerKernel, lowered: Any) -> RooflineRow:
    word = arch.word_bytes
    ceilings = {c.name: c for c in arch_ceilings(arch)}
    two = next(c for c in ceilings.values() if c.name.startswith("2-D")).value
    one = next((c.value for c in ceilings.values() if c.name == "1-D array"), two / 2)
    dram = next(c.value for c in ceilings.values() if c.name.startswith("DRAM"))
    if k.name == "lm_head":
        s = k.shape
        mac, other, exp = float(s["m"] * s["n"] * s["k"]), 0.0, 0.0
        traffic = float(s["m"] * s["k"] + s["k"] * s["n"] + s["m"] * s["n"]) * word
    else:
        mac = other = exp = 0.0
        group = set(k.einsums)
        for e in lowered.einsums:
            if e.name not in group:
                continue
            for kind, n in e.ops().items():
                if kind == "mac":
                    mac += n
                else:
                    other += n
                    exp += n if kind in ("exp", "sigmoid") else 0
        reads = {t for e in lowered.einsums if e.name in group for t in e.inputs if t not in group}
        writes = {e.name for e in lowered.einsums if e.name in group} - {
            t for e in lowered.einsums if e.name in group for t in e.inputs
        }
        traffic = float(sum(lowered.tensor_words[t] for t in reads | writes)) * word
    times = {"2-D array": 2 * mac / two, "1-D array": other / one, "DRAM": traffic / dram}
    binding = max(times, key=times.__getitem__)
    bound = max(times.values())
    return RooflineRow(k.name, k.einsums, 2 * mac + other, traffic, exp, bound, bound, binding,
                       {"mac": mac, "other_ops": other})  # fmt: skip


@dataclass(frozen=True)
class RooflineStudy:
    """Rows of one layer plus the whole-model summary for a target."""

    target: str
    target_kind: str  # device | arch
    model: str
    phase: str
    seq: int
    batch: int
    dtype: str
    rows: tuple[RooflineRow, ...]
    head: RooflineRow | None
    ceilings: tuple[Ceiling, ...]
    layers: int
    source: str
    notes: tuple[str, ...]
    dense_rows: tuple[RooflineRow, ...] = ()
    """A mixture-of-experts model's leading dense layers: the rows of one of them (``rows`` are a MoE layer's)."""
    dense_layers: int = 0
    """How many of ``layers`` are dense layers (DeepSeek's first_k_dense_replace)."""

    @property
    def layer_s(self) -> float:
        """Predicted time of one layer (a MoE layer, for a mixture-of-experts model)."""
        return sum(r.predicted_s for r in self.rows)

    @property
    def model_s(self) -> float:
        """Predicted time of the whole forward pass (all layers plus the LM head)."""
        dense = self.dense_layers * sum(r.predicted_s for r in self.dense_rows)
        return (self.layers - self.dense_layers) * self.layer_s + dense + (self.head.predicted_s if self.head else 0.0)

    @property
    def tokens_per_s(self) -> float:
        """Tokens per second of this phase: prompt tokens in prefill, generated tokens in decode, trained tokens
        (forward and backward) in train."""
        tokens = self.batch * (self.seq if self.phase in ("prefill", "train") else 1)
        return tokens / self.model_s

    def summary(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {
            "target": self.target,
            "target_kind": self.target_kind,
            "model": self.model,
            "phase": self.phase,
            "seq": self.seq,
            "batch": self.batch,
            "dtype": self.dtype,
            "layers": self.layers,
            "layer_time_s": self.layer_s,
            "model_time_s": self.model_s,
            "tokens_per_s": self.tokens_per_s,
            "rows": [_row_dict(r) for r in (*self.rows, *([self.head] if self.head else []))],
            "notes": list(self.notes),
            **({"dense_layers": self.dense_layers, "dense_layer_time_s": sum(r.predicted_s for r in self.dense_rows),
                "dense_rows": [_row_dict(r) for r in self.dense_rows]} if self.dense_layers else {}),
        }  # fmt: skip


def _row_dict(r: RooflineRow) -> dict[str, Any]:
    return {
        "kernel": r.kernel,
        "einsums": list(r.einsums),
        "flops": r.flops,
        "bytes": r.bytes,
        "intensity_flop_per_byte": r.intensity if math.isfinite(r.intensity) else None,
        "bound_s": r.bound_s,
        "time_s": r.predicted_s,
        "binding": r.binding,
        "tflops": r.tflops,
    }


def model_rows(
    model: str,
    phase: str,
    seq: int,
    batch: int,
    *,
    device: str | DeviceSpec | None = None,
    arch: str | None = None,
    dtype: str | None = None,
    kernel: str | None = None,
    attention: Callable[[LayerKernel], RooflineRow] | None = None,
    attention_note: str = "",
) -> RooflineStudy:
    """Rows for one layer of ``model`` on a device or a spatial-array architecture (exactly one of the two).

    ``attention``: the row of the layer's attention kernel, made by the caller (the front door maps an
    attention cascade of the user's onto the target and passes its design here); default: the dense
    attention of the model (its causal mask and window) as this module costs it. ``phase`` ``train``: the
    prefill layer's kernels each with their backward (a device only; attention by ``direction="fwd+bwd"``).
    """
    train = phase == "train"
    if train and (arch is not None or attention is not None):
        raise AttnscopeError("--phase train is modelled on a device (--device) for the model's dense attention: "
                             "drop --arch or --workload")  # fmt: skip
    phase = "prefill" if train else phase
    if (device is None) == (arch is None):
        raise AttnscopeError("give exactly one of a device (--device) or an architecture (--arch)")
    if kernel == "decode" and phase != "decode":
        raise AttnscopeError(
            f"kernel 'decode' runs the decode phase (one new token per sequence); for --phase {phase} give "
            f"{' or '.join(k for k in KERNELS if k != 'decode')}, or no kernel"
        )
    shape = get_model(model)
    if attention is not None and shape.mla:
        raise AttnscopeError(
            f"{shape.name} has multi-head latent attention: its layer's attention kernel is the MLA form's (latent "
            "heads, q_absorb / kv_b_proj around it), which a cascade given by --workload cannot replace yet; drop "
            "--workload (compare-attention costs the mla cascades at this model's sizes)"
        )
    kernels = layer_kernels(shape, phase, seq, batch)
    head = head_kernel(shape, batch)
    dense_layers = shape.moe.dense_layers if shape.moe else 0
    notes = [
        "Layer norms, rotary embeddings and the 1/sqrt(d) scale are left out (small elementwise kernels).",
        "QKV and gate/up projections run as one fused GEMM each; attention is one fused kernel on GPUs.",
    ]
    if attention_note:
        notes.append(attention_note)
    if device is not None:
        from simulator.gpu import default_dtype

        spec = load_device(device)
        dtype = dtype or default_dtype(spec)

        def device_rows(ks: list[LayerKernel]) -> tuple[RooflineRow, ...]:
            return tuple(attention(k) if attention and k.kind == "attention"
                         else _device_row(spec, dtype, k, kernel, train)[0] for k in ks)  # fmt: skip

        form = None
        try:
            rows = device_rows(kernels)
        except SpecError as exc:  # absorbed MLA's latent-wide heads exceed the kernel model: run the expanded form
            if not (shape.mla and phase == "decode" and attention is None):
                raise
            form = "expanded"
            kernels = layer_kernels(shape, phase, seq, batch, mla=form)
            rows = device_rows(kernels)
            notes.append(
                f"MLA decode runs in the expanded form (every cached latent up-projected to K and V each "
                f"step, as Hugging Face's DeepseekV2 runs it): the absorbed form cannot run here ({exc})."
            )
        notes[2:2] = _model_notes(shape, form or mla_form(phase), tokens_per_step(phase, seq, batch))
        dense_rows = device_rows(layer_kernels(shape, phase, seq, batch, dense=True, mla=form)) if dense_layers else ()
        if head and train:  # training computes the logits (and their gradient) of every token, not the last one's
            head = replace(head, shape={**head.shape, "m": batch * seq})
        head_row = _device_row(spec, dtype, head, None, train)[0] if head else None
        weights = shape.params() * DTYPE_BYTES[dtype]
        cache = kv_cache_bytes(shape, seq, batch, DTYPE_BYTES[dtype])
        if weights + cache > spec.dram_bytes:
            notes.append(
                f"Weights ({weights / 1e9:.1f} GB) plus KV cache ({cache / 1e9:.1f} GB) exceed {spec.id}'s "
                f"{spec.dram_bytes / 1e9:.0f} GB (dram_bytes): the model would need several devices or offloading."
            )
        notes.append(f"Kernel times are simulator.gpu predictions; efficiencies: {spec.efficiency.calibration.method}.")
        if train:
            notes.append("Train: each row is a kernel's forward plus its backward (GEMMs: the input- and weight-"
                         "gradient GEMMs; attention: simulator.kernels.backward; elementwise maps: one more read); "
                         "the optimizer step and gradient communication are left out.")  # fmt: skip
            phase = "train"
        return RooflineStudy(spec.id, "device", shape.name, phase, seq, batch, dtype, rows, head_row,
                             tuple(device_ceilings(spec, dtype)), shape.layers, spec.source, tuple(notes),
                             dense_rows, dense_layers)  # fmt: skip
    from simulator.specs import load_arch

    cascade = layer_cascade(shape, phase)  # the model's layer first: an MLA or MoE model says it has none
    spec_a = load_arch(arch)
    lowered = lower(cascade, layer_sizes(shape, phase, seq, batch))
    notes[2:2] = _model_notes(shape, "", 0)
    rows = tuple(attention(k) if attention and k.kind == "attention" else _arch_row(spec_a, k, lowered)
                 for k in kernels)  # fmt: skip
    head_row = _arch_row(spec_a, head, lowered) if head else None
    notes.append(
        "Spatial-array target: each row's time is its roofline bound (compulsory DRAM traffic, dense op counts, "
        "masked scores included); a mapping from the mapper can only be slower."
    )
    return RooflineStudy(spec_a.name, "arch", shape.name, phase, seq, batch, f"{spec_a.word_bytes}-byte words", rows,
                         head_row, tuple(arch_ceilings(spec_a)), shape.layers, spec_a.source, tuple(notes))  # fmt: skip


def _model_notes(shape: ModelShape, form: str, tokens: int) -> list[str]:
    """What the rows assume about the model's MLA (run in ``form``) and MoE (``tokens`` per step), and what its
    config reader left out."""
    out = []
    if shape.mla:
        a = shape.mla
        out.append(
            f"MLA (latent {a.kv_lora_rank}, rope {a.qk_rope_head_dim}, q/k head {a.qk_nope_head_dim}+"
            f"{a.qk_rope_head_dim}, v head {a.v_head_dim}) in the {form} form: "
            + ("K and V up-projected from the latent (kv_b_proj), then multi-head attention with V zero-padded to "
               "the q/k head dim, as vLLM's MLA prefill runs FlashAttention." if form == "expanded" else
               "the key up-projection folded into the query (q_absorb), attention over the cached latent and rope key "
               "as one K/V head, the value up-projection after it (v_up), as FlashMLA decodes.")
        )  # fmt: skip
    if shape.moe:
        m = shape.moe
        out.append(
            f"MoE: {m.active} of {m.experts} routed experts per token plus {m.shared_experts} shared, each "
            f"{m.expert_ffn} wide; uniform routing assumed: {tokens} tokens touch "
            f"{experts_touched(m.experts, m.active, tokens)} experts, whose weights the grouped GEMM reads"
            + (f"; the first {m.dense_layers} layer(s) are dense (FFN {shape.ffn})." if m.dense_layers else ".")
        )  # fmt: skip
    out += [f"Model config: {n}" for n in shape.notes]
    return out


# ------------------------------------------------------------------------------------------------ report


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "inf"


def write_report(study: RooflineStudy, out_dir: str | Path, *, plot: bool = True) -> dict[str, Path]:
    """Write report.md (and roofline.png) into out_dir; returns the paths written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AttnscopeError(f"cannot create {out}: {exc.strerror}") from None
    paths = {"report": out / "report.md"}
    lines = [
        f"# Roofline: {study.model} {study.phase} on {study.target}",
        "",
        f"Target: **{study.target}** ({study.target_kind}); sequence {study.seq}, batch {study.batch}, "
        f"{study.dtype}. Source of the figures: {study.source}",
        "",
        "## Ceilings",
        "",
        "| ceiling | value |",
        "|---|---|",
        *[
            f"| {c.name} | {_fmt(c.value / (1e12 if c.kind == 'compute' else 1e9))} "
            f"{'T' if c.kind == 'compute' else 'G'}{c.unit} |"
            for c in study.ceilings
        ],
        "",
        "## One layer",
        "",
        "| kernel | Einsums | GFLOP | MB moved | FLOP/B | roofline bound (us) | predicted (us) | binds "
        "| TFLOP/s | share |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    total = study.layer_s
    for r in (*study.rows, *([study.head] if study.head else [])):
        share = f"{100 * r.predicted_s / total:.1f}%" if r.kernel != "lm_head" else "(once)"
        lines.append(
            f"| {r.kernel} | {', '.join(r.einsums)} | {r.flops / 1e9:.3g} | {r.bytes / 1e6:.4g} | {_fmt(r.intensity)} "
            f"| {r.bound_s * 1e6:.4g} | {r.predicted_s * 1e6:.4g} | {r.binding} | {r.tflops:.3g} | {share} |"
        )
    lines += [
        "",
        "## Summary",
        "",
        *(
            [
                f"- one dense layer (the first {study.dense_layers}): "
                f"{sum(r.predicted_s for r in study.dense_rows) * 1e3:.4g} ms; the table's rows are a MoE layer's"
            ]
            if study.dense_layers
            else []
        ),
        f"- one layer: {total * 1e3:.4g} ms; {study.layers} layers"
        + (f" + LM head ({study.head.predicted_s * 1e6:.4g} us)" if study.head else "")
        + f": **{study.model_s * 1e3:.4g} ms** per {'training step' if study.phase == 'train' else 'forward pass'}",
        f"- {({'prefill': 'prompt', 'train': 'trained'}).get(study.phase, 'generated')} tokens per second: "
        f"**{study.tokens_per_s:,.0f}**",
        "",
        "## Assumptions",
        "",
        *[f"- {n}" for n in study.notes],
        "- The roofline bound is max(FLOPs / tensor peak, exp / SFU peak, compulsory bytes / DRAM peak) at datasheet "
        "figures; no prediction is below it.",
    ]
    if plot:
        paths["plot"] = out / "roofline.png"
        _plot(study, paths["plot"])
        lines += ["", "![roofline](roofline.png)"]
    paths["report"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def _plot(study: RooflineStudy, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in (*study.rows, *([study.head] if study.head else [])) if r.flops > 0 and r.bytes > 0]
    xs = [r.intensity for r in rows] or [1.0]
    lo, hi = min([*xs, 0.1]) / 3, max([*xs, 1e4]) * 3
    fig = Figure(figsize=(9, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.09, right=0.98, top=0.94, bottom=0.09)
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    styles = iter(["-", "--", "-.", ":", (0, (5, 1))])
    # Only roofs in these axes' units are drawn: FLOP/s peaks, and the DRAM slope (x is FLOP per DRAM byte).
    # The others (exp/s, 1-D op/s, L2 or buffer bandwidth, whose bytes are not DRAM bytes) are listed instead.
    compute = [c for c in study.ceilings if c.kind == "compute" and c.unit == "FLOP/s"]
    dram = [c for c in study.ceilings if c.kind == "bandwidth" and c.name.startswith("DRAM")]
    top = max(c.value for c in compute)
    for c in compute:
        ax.plot([lo, hi], [c.value / 1e12] * 2, linestyle=next(styles, "-"), linewidth=1.4,
                label=f"{c.name}: {c.value / 1e12:.3g} TFLOP/s")  # fmt: skip
    for c in dram:
        if math.isfinite(c.value):
            ax.plot(grid, [min(top, c.value * x) / 1e12 for x in grid], linewidth=1.4,
                    label=f"{c.name} slope: {c.value / 1e12:.3g} TB/s")  # fmt: skip
    others = [c for c in study.ceilings if c not in compute and c not in dram]
    if others:
        listed = "; ".join(f"{c.name} {c.value / 1e12:.3g} T{c.unit}" for c in others)
        ax.text(0.01, 0.99, f"roofs not in these units (not drawn): {listed}", transform=ax.transAxes,
                fontsize=7, va="top", ha="left")  # fmt: skip
    markers = "osD^v<>pP*hX"
    for i, r in enumerate(rows):
        ax.scatter([r.intensity], [r.tflops], marker=markers[i % len(markers)], s=55, zorder=5,
                   label=f"{r.kernel} ({r.binding}-bound)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOP per DRAM byte)")
    ax.set_ylabel("attained throughput (TFLOP/s)")
    ax.set_title(f"{study.model} {study.phase} (seq {study.seq}, batch {study.batch}) on {study.target}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.savefig(path)
