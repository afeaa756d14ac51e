"""One decoder or encoder layer of a zoo model (:mod:`workloads.models`) as a cascade of Einsums.

Ranks of a layer: B batch, P query tokens, M key/value tokens (P = M in prefill; in decode P = 1 and M is the
context, cached K/V included), D model width, G key/value heads, R query heads per K/V head (H = G x R, so
GQA/MQA are G < H), E = F head dim, S FFN width. Llama-class models use a gated SiLU FFN (gate and up
projections, ``x * sigmoid(x) * up``, down projection); the encoder shapes (BERT, TrXL, T5, XLM from
:mod:`workloads.models`) use two FFN matmuls with the same activation form. Left out, as in the FuseMax study:
layer norms, rotary embeddings and the 1/sqrt(E) scale (folded into Q); they are elementwise and small.

:func:`layer_kernels` groups the Einsums into the kernels an inference engine launches (fused QKV GEMM,
fused attention, output projection, residual adds, fused gate/up GEMM, activation, down projection) as plain
data; what each costs is the simulator's business.

>>> shape = get_model("llama3-8b")
>>> shape.heads, shape.kv_heads, shape.head_dim
(32, 8, 128)
>>> [k.name for k in layer_kernels(shape, "decode", seq=1024, batch=1)][:3]
['qkv_proj', 'attention', 'o_proj']
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from einsum.cascade import Cascade
from einsum.errors import ShapeError
from workloads.models import ModelShape, get_model

PHASES = ("prefill", "decode")


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ShapeError(f"unknown phase {phase!r}; allowed: {', '.join(PHASES)}")


def layer_text(shape: ModelShape, phase: str) -> str:
    """Cascade text of one layer in prefill (K/V projected from the tokens) or decode (K/V from the cache)."""
    _check_phase(phase)
    ffn_w = "WG[D,S], WU[D,S], WD[S,D]" if shape.gated_ffn else "W1[D,S], W2[S,D]"
    if phase == "prefill":
        kv_in, kv = (
            "XM[B,M,D], ",
            ("K[b,g,e,m] = sum[d] XM[b,m,d] * WK[d,g,e]", "V[b,g,f,m] = sum[d] XM[b,m,d] * WV[d,g,f]"),
        )
        k_name, v_name, extra_out = "K", "V", ""
    else:
        kv_in = "KC[B,G,E,M], VC[B,G,F,M], "
        kv = ("KN[b,g,e,p] = sum[d] X[b,p,d] * WK[d,g,e]", "VN[b,g,f,p] = sum[d] X[b,p,d] * WV[d,g,f]")
        k_name, v_name, extra_out = "KC", "VC", ", KN, VN"
    scores = "QK"
    lines = [
        f"# {shape.name} {'decoder' if shape.causal else 'encoder'} layer, {phase}: QKV projections "
        f"({'GQA, ' if shape.kv_heads < shape.heads else ''}G K/V heads x R query heads), attention, output "
        "projection, residuals, FFN.",
        f"input X[B,P,D], {kv_in}WQ[D,G,R,E], WK[D,G,E], WV[D,G,F], WO[G,R,F,D], {ffn_w}",
        "Q[b,g,r,e,p] = sum[d] X[b,p,d] * WQ[d,g,r,e]",
        *kv,
        f"QK[b,g,r,m,p] = sum[e] Q[b,g,r,e,p] * {k_name}[b,g,e,m]",
    ]
    if shape.causal and phase == "prefill":
        lines.append("MQK[b,g,r,m,p] = where(m <= p + M - P, QK[b,g,r,m,p], -inf)")
        scores = "MQK"
    lines += [
        f"GM[b,g,r,p] = max[m] {scores}[b,g,r,m,p]",
        f"SN[b,g,r,m,p] = exp({scores}[b,g,r,m,p] - GM[b,g,r,p])",
        "SD[b,g,r,p] = sum[m] SN[b,g,r,m,p]",
        "A[b,g,r,m,p] = SN[b,g,r,m,p] / SD[b,g,r,p]",
        f"AV[b,g,r,f,p] = sum[m] A[b,g,r,m,p] * {v_name}[b,g,f,m]",
        "Z[b,p,d] = sum[g,r,f] AV[b,g,r,f,p] * WO[g,r,f,d]",
        "H1[b,p,d] = X[b,p,d] + Z[b,p,d]",
    ]
    if shape.gated_ffn:
        lines += [
            "FG[b,p,s] = sum[d] H1[b,p,d] * WG[d,s]",
            "FU[b,p,s] = sum[d] H1[b,p,d] * WU[d,s]",
            "FA[b,p,s] = FG[b,p,s] * sigmoid(FG[b,p,s]) * FU[b,p,s]",
            "FD[b,p,d] = sum[s] FA[b,p,s] * WD[s,d]",
        ]
    else:
        lines += [
            "FG[b,p,s] = sum[d] H1[b,p,d] * W1[d,s]",
            "FA[b,p,s] = FG[b,p,s] * sigmoid(FG[b,p,s])",
            "FD[b,p,d] = sum[s] FA[b,p,s] * W2[s,d]",
        ]
    lines += ["Y[b,p,d] = H1[b,p,d] + FD[b,p,d]", f"output Y{extra_out}"]
    return "\n".join(lines) + "\n"


@cache
def layer_cascade(name: str, phase: str) -> Cascade:
    """One layer of a registered model as a validated cascade (parsed once per model and phase)."""
    shape = get_model(name)
    return Cascade.from_text(layer_text(shape, phase), name=f"{name}-{phase}", origin=f"<{name} {phase} layer>")


def layer_sizes(shape: ModelShape, phase: str, seq: int, batch: int) -> dict[str, int]:
    """Rank sizes: prefill of ``seq`` tokens (P = M = seq), or decode of one token after ``seq`` of context."""
    _check_phase(phase)
    for what, v in (("seq", seq), ("batch", batch)):
        if not (isinstance(v, int) and v >= 1):
            raise ShapeError(f"{what} must be a positive integer, got {v!r}")
    context = min(seq, shape.window) if (phase == "decode" and shape.window) else seq
    return {
        "B": batch,
        "P": seq if phase == "prefill" else 1,
        "M": seq if phase == "prefill" else context,
        "D": shape.d_model,
        "G": shape.kv_heads,
        "R": shape.group,
        "E": shape.head_dim,
        "F": shape.head_dim,
        "S": shape.ffn,
    }


@dataclass(frozen=True)
class LayerKernel:
    """One kernel of a layer: the Einsums it covers and its shape for the kernel models."""

    name: str
    einsums: tuple[str, ...]
    kind: str  # gemm | attention | elementwise
    shape: dict[str, Any]  # gemm: m, n, k, batch; attention: sdpa keywords; elementwise: elements, reads, sfu


def layer_kernels(shape: ModelShape, phase: str, seq: int, batch: int) -> list[LayerKernel]:
    """The kernels of one layer, in order (QKV fused into one GEMM, gate/up into one, attention fused)."""
    s = layer_sizes(shape, phase, seq, batch)
    tokens = s["B"] * s["P"]
    d, h, g, e, ffn = shape.d_model, shape.heads, shape.kv_heads, shape.head_dim, shape.ffn
    kv = ("K", "V") if phase == "prefill" else ("KN", "VN")
    attention = ["QK", *(["MQK"] if shape.causal and phase == "prefill" else []), "GM", "SN", "SD", "A", "AV"]
    out = [
        LayerKernel("qkv_proj", ("Q", *kv), "gemm", {"m": tokens, "n": (h + 2 * g) * e, "k": d, "batch": 1}),
        LayerKernel(
            "attention",
            tuple(attention),
            "attention",
            {
                "batch": s["B"],
                "heads": h,
                "kv_heads": g,
                "seq_q": s["P"],
                "seq_kv": s["M"],
                "head_dim": e,
                "causal": shape.causal and phase == "prefill",
                "window": shape.window if (shape.window and phase == "prefill" and seq > shape.window) else None,
            },
        ),
        LayerKernel("o_proj", ("Z",), "gemm", {"m": tokens, "n": d, "k": h * e, "batch": 1}),
        LayerKernel("residual_1", ("H1",), "elementwise", {"elements": tokens * d, "reads": 2, "sfu": 0}),
    ]
    if shape.gated_ffn:
        out += [
            LayerKernel("gate_up_proj", ("FG", "FU"), "gemm", {"m": tokens, "n": 2 * ffn, "k": d, "batch": 1}),
            LayerKernel("silu_mul", ("FA",), "elementwise", {"elements": tokens * ffn, "reads": 2, "sfu": 1}),
        ]
    else:
        out += [
            LayerKernel("ffn_1", ("FG",), "gemm", {"m": tokens, "n": ffn, "k": d, "batch": 1}),
            LayerKernel("activation", ("FA",), "elementwise", {"elements": tokens * ffn, "reads": 1, "sfu": 1}),
        ]
    out += [
        LayerKernel("down_proj", ("FD",), "gemm", {"m": tokens, "n": d, "k": ffn, "batch": 1}),
        LayerKernel("residual_2", ("Y",), "elementwise", {"elements": tokens * d, "reads": 2, "sfu": 0}),
    ]
    return out


def head_kernel(shape: ModelShape, batch: int) -> LayerKernel | None:
    """The LM head for the last token of each sequence (prefill and decode alike), or None without one."""
    if not shape.vocab:
        return None
    return LayerKernel("lm_head", ("LOGITS",), "gemm", {"m": batch, "n": shape.vocab, "k": shape.d_model, "batch": 1})


def kv_cache_bytes(shape: ModelShape, context: int, batch: int, elem_bytes: int = 2) -> int:
    """Bytes of K and V cached for batch sequences of context tokens over all layers."""
    return 2 * shape.layers * batch * context * shape.kv_heads * shape.head_dim * elem_bytes


def tokens_per_step(phase: str, seq: int, batch: int) -> int:
    """Tokens a forward pass produces or consumes: all prompt tokens in prefill, one per sequence in decode."""
    _check_phase(phase)
    return batch * seq if phase == "prefill" else batch
