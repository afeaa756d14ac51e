"""One decoder or encoder layer of a zoo model (:mod:`workloads.models`) as a cascade of Einsums.

Ranks of a layer: B batch, P query tokens, M key/value tokens (P = M in prefill; in decode P = 1 and M is the
context, cached K/V included), D model width, G key/value heads, R query heads per K/V head (H = G x R, so
GQA/MQA are G < H), E = F head dim, S FFN width. Llama-class models use a gated SiLU FFN (gate and up
projections, ``x * sigmoid(x) * up``, down projection); the encoder shapes (BERT, TrXL, T5, XLM from
:mod:`workloads.models`) use two FFN matmuls with the same activation form. Left out, as in the FuseMax study:
layer norms, rotary embeddings and the 1/sqrt(E) scale (folded into Q); they are elementwise and small.

:func:`layer_kernels` groups the Einsums into the kernels an inference engine launches (fused QKV GEMM,
fused attention, output projection, residual adds, fused gate/up GEMM, activation, down projection) as plain
data; what each costs is the simulator's business. A model read from a Hugging Face config may have multi-head
latent attention (its projections and attention in the expanded or absorbed form, :data:`MLA_FORMS`) and a
mixture-of-experts FFN (router, shared experts, routed experts under uniform routing): their kernels are here,
while the layer as a cascade (:func:`layer_text`, for spatial-array targets) refuses them.

>>> shape = get_model("llama3-8b")
>>> shape.heads, shape.kv_heads, shape.head_dim
(32, 8, 128)
>>> [k.name for k in layer_kernels(shape, "decode", seq=1024, batch=1)][:3]
['qkv_proj', 'attention', 'o_proj']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from einsum.cascade import Cascade
from einsum.errors import ShapeError
from workloads.model_shape import ModelShape
from workloads.models import get_model

PHASES = ("prefill", "decode")


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ShapeError(f"unknown phase {phase!r}; allowed: {', '.join(PHASES)}")


def layer_text(shape: ModelShape, phase: str) -> str:
    """Cascade text of one layer in prefill (K/V projected from the tokens) or decode (K/V from the cache)."""
    _check_phase(phase)
    if shape.mla or shape.moe:
        what = " and ".join(n for n, part in (("multi-head latent attention", shape.mla), ("mixture of experts",
                            shape.moe)) if part)  # fmt: skip
        raise ShapeError(f"{shape.name}: the layer as a cascade of Einsums (spatial-array targets) has no {what} "
                         "form yet; cost this model on a device (--device), whose kernels model it")  # fmt: skip
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
def layer_cascade(name: str | ModelShape, phase: str) -> Cascade:
    """One layer of a registered model (or a model shape) as a validated cascade (parsed once per model and
    phase)."""
    shape = get_model(name)
    name = shape.name
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


MLA_FORMS = ("expanded", "absorbed")
"""How a layer runs multi-head latent attention: ``expanded`` (K and V up-projected from the latent, then
multi-head attention over nope + rope dims, V zero-padded to that width as vLLM's MLA prefill does for
FlashAttention) or ``absorbed`` (the key up-projection folded into the query, attention over the cached latent
and the shared rope key as one K/V head, the value up-projection after it: FlashMLA's decode)."""


def mla_form(phase: str) -> str:
    """The MLA form a phase runs by default: expanded for prefill, absorbed for decode (DeepSeek-V2 sec. 2.1.2)."""
    return "expanded" if phase == "prefill" else "absorbed"


def layer_kernels(
    shape: ModelShape, phase: str, seq: int, batch: int, *, dense: bool = False, mla: str | None = None
) -> list[LayerKernel]:
    """The kernels of one layer, in order (QKV fused into one GEMM, gate/up into one, attention fused).

    A mixture-of-experts model's layers run the router and the experts (``dense``: one of its leading dense
    layers instead); an MLA model's attention runs in the form ``mla`` (:data:`MLA_FORMS`; default
    :func:`mla_form` of the phase)."""
    s = layer_sizes(shape, phase, seq, batch)
    tokens = s["B"] * s["P"]
    d, h, g, e, ffn = shape.d_model, shape.heads, shape.kv_heads, shape.head_dim, shape.ffn
    window = shape.window if (shape.window and phase == "prefill" and seq > shape.window) else None
    sdpa = {"batch": s["B"], "heads": h, "kv_heads": g, "seq_q": s["P"], "seq_kv": s["M"], "head_dim": e,
            "causal": shape.causal and phase == "prefill", "window": window}  # fmt: skip
    if shape.mla:
        out = _mla_kernels(shape, s, tokens, sdpa, mla or mla_form(phase))
    else:
        kv = ("K", "V") if phase == "prefill" else ("KN", "VN")
        attention = ["QK", *(["MQK"] if shape.causal and phase == "prefill" else []), "GM", "SN", "SD", "A", "AV"]
        out = [
            LayerKernel("qkv_proj", ("Q", *kv), "gemm", {"m": tokens, "n": (h + 2 * g) * e, "k": d, "batch": 1}),
            LayerKernel("attention", tuple(attention), "attention", sdpa),
            LayerKernel("o_proj", ("Z",), "gemm", {"m": tokens, "n": d, "k": h * e, "batch": 1}),
        ]
    out.append(LayerKernel("residual_1", ("H1",), "elementwise", {"elements": tokens * d, "reads": 2, "sfu": 0}))
    if shape.moe and not dense:
        return out + _moe_kernels(shape, tokens)
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


def _mla_kernels(
    shape: ModelShape, s: dict[str, int], tokens: int, sdpa: dict[str, Any], form: str
) -> list[LayerKernel]:
    """Projections and attention of an MLA layer (DeepSeek-V2 sec. 2.1): the query (directly, or through its
    low-rank compression) and the KV latent with the shared rope key in one GEMM from the tokens, then the
    attention in ``form`` (:data:`MLA_FORMS`), then the output projection from the value heads."""
    if form not in MLA_FORMS:
        raise ShapeError(f"unknown MLA form {form!r}; allowed: {', '.join(MLA_FORMS)}")
    a, h, d = shape.mla, shape.heads, shape.d_model
    qk, latent, kv_a = a.qk_nope_head_dim + a.qk_rope_head_dim, a.kv_lora_rank, a.kv_lora_rank + a.qk_rope_head_dim
    q_out = h * qk if a.q_lora_rank is None else a.q_lora_rank
    out = [LayerKernel("q_kv_a_proj", ("Q" if a.q_lora_rank is None else "CQ", "CKV", "KR"), "gemm",
                       {"m": tokens, "n": q_out + kv_a, "k": d, "batch": 1})]  # fmt: skip
    if a.q_lora_rank is not None:
        out.append(LayerKernel("q_b_proj", ("Q",), "gemm", {"m": tokens, "n": h * qk, "k": a.q_lora_rank, "batch": 1}))
    if form == "expanded":
        kv_tokens = s["B"] * s["M"]  # prefill: the prompt's tokens; decode: every cached latent, each step
        out += [
            LayerKernel("kv_b_proj", ("KC", "VC"), "gemm",
                        {"m": kv_tokens, "n": h * (a.qk_nope_head_dim + a.v_head_dim), "k": latent, "batch": 1}),
            LayerKernel("attention", ("QK", "A", "AV"), "attention",
                        {**sdpa, "kv_heads": h, "head_dim": max(qk, a.v_head_dim)}),
        ]  # fmt: skip
    else:
        out += [
            LayerKernel("q_absorb", ("QL",), "gemm", {"m": tokens, "n": latent, "k": a.qk_nope_head_dim, "batch": h}),
            LayerKernel("attention", ("QC", "QKR", "QK", "A", "OL"), "attention",
                        {**sdpa, "kv_heads": 1, "head_dim": latent + a.qk_rope_head_dim}),
            LayerKernel("v_up", ("AV",), "gemm", {"m": tokens, "n": a.v_head_dim, "k": latent, "batch": h}),
        ]  # fmt: skip
    out.append(LayerKernel("o_proj", ("Z",), "gemm", {"m": tokens, "n": d, "k": h * a.v_head_dim, "batch": 1}))
    return out


def experts_touched(experts: int, active: int, tokens: int) -> int:
    """Routed experts that receive at least one of ``tokens`` tokens when each picks ``active`` of ``experts``
    uniformly (the expectation ``E * (1 - (1 - k/E)^T)``, rounded up): the experts whose weights a step reads."""
    return max(1, min(experts, tokens * active, math.ceil(experts * (1 - (1 - active / experts) ** tokens))))


def _moe_kernels(shape: ModelShape, tokens: int) -> list[LayerKernel]:
    """A mixture-of-experts FFN under uniform routing: the router GEMM, the shared experts as one gated FFN
    (DeepSeek), the routed experts as a grouped GEMM over the experts the step touches (:func:`experts_touched`,
    each with an equal share of the tokens x top-k rows), the activation and the weighted combine."""
    m, d = shape.moe, shape.d_model
    rows = tokens * m.active
    touched = experts_touched(m.experts, m.active, tokens)
    per = math.ceil(rows / touched)
    out = [LayerKernel("router", ("GATE",), "gemm", {"m": tokens, "n": m.experts, "k": d, "batch": 1})]
    if m.shared_experts:
        width = m.shared_experts * m.expert_ffn
        out.append(LayerKernel("shared_gate_up_proj", ("SG", "SU"), "gemm", {"m": tokens, "n": 2 * width, "k": d,
                                                                             "batch": 1}))  # fmt: skip
    out += [
        LayerKernel("experts_gate_up_proj", ("EG", "EU"), "gemm",
                    {"m": per, "n": 2 * m.expert_ffn, "k": d, "batch": touched}),
        LayerKernel("silu_mul", ("EA",), "elementwise",
                    {"elements": (rows + tokens * m.shared_experts) * m.expert_ffn, "reads": 2, "sfu": 1}),
        LayerKernel("experts_down_proj", ("ED",), "gemm", {"m": per, "n": d, "k": m.expert_ffn, "batch": touched}),
    ]  # fmt: skip
    if m.shared_experts:
        out.append(LayerKernel("shared_down_proj", ("SD",), "gemm",
                               {"m": tokens, "n": d, "k": m.shared_experts * m.expert_ffn, "batch": 1}))  # fmt: skip
    out += [
        LayerKernel("expert_combine", ("FD",), "elementwise", {"elements": rows * d, "reads": 2, "sfu": 0}),
        LayerKernel("residual_2", ("Y",), "elementwise", {"elements": tokens * d, "reads": 2, "sfu": 0}),
    ]
    return out


def head_kernel(shape: ModelShape, batch: int) -> LayerKernel | None:
    """The LM head for the last token of each sequence (prefill and decode alike), or None without one."""
    if not shape.vocab:
        return None
    return LayerKernel("lm_head", ("LOGITS",), "gemm", {"m": batch, "n": shape.vocab, "k": shape.d_model, "batch": 1})


def kv_cache_bytes(shape: ModelShape, context: int, batch: int, elem_bytes: int = 2) -> int:
    """Bytes of K and V cached for batch sequences of context tokens over all layers (MLA: the latent and the
    shared rope key; a sliding window caches at most its span)."""
    if shape.window:
        context = min(context, shape.window)
    if shape.mla:
        return shape.layers * batch * context * (shape.mla.kv_lora_rank + shape.mla.qk_rope_head_dim) * elem_bytes
    return 2 * shape.layers * batch * context * shape.kv_heads * shape.head_dim * elem_bytes


def tokens_per_step(phase: str, seq: int, batch: int) -> int:
    """Tokens a forward pass produces or consumes: all prompt tokens in prefill, one per sequence in decode."""
    _check_phase(phase)
    return batch * seq if phase == "prefill" else batch
