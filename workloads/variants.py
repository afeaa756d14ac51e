"""Attention beyond dense softmax: the variant families of issue 7 as cascades of Extended Einsums.

Every cascade keeps the foundation's conventions (``workloads.attention``): B batch, H query heads, M key
positions, P query positions (the last P of the M positions, so a causal mask keeps ``m <= p + M - P``),
E the Q/K head dim, F the V head dim, no 1/sqrt(E) scale (fold it into Q). Softmax variants use the
one-pass online softmax of ``attention-1pass`` (FlashAttention-2 style: ``M = M1 * M0``, running max RM,
denominator RL and output RO rescaled by C after every M0 tile).

Each cascade's first comment line names the paper it follows and says where it departs from it. Two
departures are shared by all masked softmax variants and stated once here:

- masked scores are ``-inf``; where a whole tile can be masked for a query (windows, sinks, block masks,
  splits) the running max starts at ``-1e30`` instead of ``-inf`` (the guard FlashAttention kernels use),
  so a fully masked tile gives ``exp(-inf + 1e30) = 0`` rather than ``exp(-inf + inf) = NaN``. The result is
  exact whenever every query sees at least one key.
- window, sink and local-block sizes are size-only ranks of the mask conditions (``W``, ``SINK``, ``LOCAL``)
  whose registered sizes the text declares (``param W = 4096``); give another like any rank size
  (``--shape W=128``). The builders (:func:`sliding_window`, :func:`streaming_llm`, :func:`duo_attention`,
  :func:`s2_attention`) write the text with other declared defaults.
- block masks declare the fraction of key blocks they keep (``density BM = 0.25``), which the mappers use
  to skip tiles; the interpreter reads the mask itself.
"""

from __future__ import annotations

from collections.abc import Callable

from einsum.cascade import Cascade
from einsum.errors import ShapeError
from workloads.registry import CascadeEntry, register_cascade

_IO = "input Q[B,H,E,P], K[B,H,E,M], V[B,H,F,M]"
_GUARD = "-1e30"  # start of the running max of masked variants (see the module docstring)


def _online(
    hd: str,
    v: str,
    *,
    pq: str = "p",
    tile: str = "m0",
    scores: str = "QK",
    fv: str = "f",
    init: str = "-inf",
    suffix: str = "",
    out: str | None = "AV",
) -> list[str]:
    """The online-softmax lines over iterative M1 that follow the scores ``{scores}[{hd},m1,{tile},{pq}]``.

    ``hd`` are the leading variables (``b,h``), ``v`` the value access inside the tile, ``fv`` the value
    feature variable; ``suffix`` renames every tensor (two chains in one cascade); ``out`` names the final
    division (None: leave RM, RL and RO for a combine step).
    """
    x = suffix
    s = f"{scores}[{hd},m1,{tile},{pq}]"

    def t(name: str, mid: str) -> str:
        return f"{name}{x}[{hd},{mid},{pq}]"

    lines = [
        f"init {t('RM', '0')} = {init}",
        f"init {t('RL', '0')} = 0",
        f"init {t('RO', '0,' + fv)} = 0",
        f"{t('LM', 'm1')} = max[{tile}] {s}",
        f"{t('RM', 'm1+1')} = max({t('RM', 'm1')}, {t('LM', 'm1')})",
        f"{t('PS', 'm1,' + tile)} = exp({s} - {t('RM', 'm1+1')})",
        f"{t('C', 'm1')} = exp({t('RM', 'm1')} - {t('RM', 'm1+1')})",
        f"{t('LL', 'm1')} = sum[{tile}] {t('PS', 'm1,' + tile)}",
        f"{t('RL', 'm1+1')} = {t('RL', 'm1')} * {t('C', 'm1')} + {t('LL', 'm1')}",
        f"{t('PV', 'm1,' + fv)} = sum[{tile}] {t('PS', 'm1,' + tile)} * {v}",
        f"{t('RO', 'm1+1,' + fv)} = {t('RO', 'm1,' + fv)} * {t('C', 'm1')} + {t('PV', 'm1,' + fv)}",
    ]
    if out is not None:
        lines.append(f"{out}{x}[{hd},{fv},{pq}] = {t('RO', 'M1,' + fv)} / {t('RL', 'M1')}")
    return lines


def _text(*parts: str | list[str]) -> str:
    lines: list[str] = []
    for part in parts:
        lines.extend(part if isinstance(part, list) else part.splitlines())
    return "\n".join(lines) + "\n"


# -- shared K/V heads ----------------------------------------------------------------------------------------

GQA = _text(
    """\
# Grouped-query attention (Ainslie et al., GQA, EMNLP 2023): the H query heads form G groups of R = H/G,
# query head h = g*R + r reads K and V head g (the repeat-interleave layout). Departs from the paper only
# in being the attention step alone (projections are not part of the cascade). One pass over M.
input Q[B,H,E,P], K[B,G,E,M], V[B,G,F,M]
partition H = G * R
partition M = M1 * M0
QK[b,g,r,m1,m0,p] = sum[e] Q[b,g*R+r,e,p] * K[b,g,e,m1*M0+m0]""",
    _online("b,g,r", "V[b,g,f,m1*M0+m0]"),
    "output AV",
)

MQA = _text(
    """\
# Multi-query attention (Shazeer 2019, "Fast Transformer Decoding: One Write-Head is All You Need"): all H
# query heads share one K and one V head, so K and V have no head rank: GQA with G = 1. Departs from the
# paper only in being the attention step alone (no projections). One pass over M.
input Q[B,H,E,P], K[B,E,M], V[B,F,M]
partition M = M1 * M0
QK[b,h,m1,m0,p] = sum[e] Q[b,h,e,p] * K[b,e,m1*M0+m0]""",
    _online("b,h", "V[b,f,m1*M0+m0]"),
    "output AV",
)

_MLA_HEAD = """\
input Q[B,H,E,P], QR[B,H,ER,P], CKV[B,L,M], KR[B,ER,M], WK[H,E,L], WV[H,F,L]
partition M = M1 * M0"""

MLA = _text(
    """\
# Multi-head latent attention, absorbed form (DeepSeek-AI, DeepSeek-V2, 2024): the cache holds one latent
# CKV[b,l,m] (rank L) per position shared by all heads and one decoupled-RoPE key KR[b,er,m] (rank ER). Keys
# are WK[h,e,l] CKV and values WV[h,f,l] CKV; WK is absorbed into the query (QL = Q WK) and WV applied after the
# softmax, so attention runs in the latent space. Departs from the paper: no query compression, RoPE is
# assumed applied to QR and KR beforehand, no softmax scale. One pass over M.""",
    _MLA_HEAD,
    """\
QL[b,h,l,p] = sum[e] Q[b,h,e,p] * WK[h,e,l]
QC[b,h,m1,m0,p] = sum[l] QL[b,h,l,p] * CKV[b,l,m1*M0+m0]
QKR[b,h,m1,m0,p] = sum[er] QR[b,h,er,p] * KR[b,er,m1*M0+m0]
QK[b,h,m1,m0,p] = QC[b,h,m1,m0,p] + QKR[b,h,m1,m0,p]""",
    _online("b,h", "CKV[b,l,m1*M0+m0]", fv="l", out="OL"),
    """\
AV[b,h,f,p] = sum[l] OL[b,h,l,p] * WV[h,f,l]
output AV""",
)

MLA_EXPANDED = _text(
    """\
# Multi-head latent attention, expanded form (DeepSeek-AI, DeepSeek-V2, 2024): the per-head keys KC = WK CKV
# and values VC = WV CKV are up-projected from the latent CKV inside the cascade, then attended as usual (the
# training-time form; `mla` is the inference-time absorbed form with the same result). Departs from the
# paper as `mla` does. One pass over M.""",
    _MLA_HEAD,
    """\
KC[b,h,e,m] = sum[l] WK[h,e,l] * CKV[b,l,m]
VC[b,h,f,m] = sum[l] WV[h,f,l] * CKV[b,l,m]
QC[b,h,m1,m0,p] = sum[e] Q[b,h,e,p] * KC[b,h,e,m1*M0+m0]
QKR[b,h,m1,m0,p] = sum[er] QR[b,h,er,p] * KR[b,er,m1*M0+m0]
QK[b,h,m1,m0,p] = QC[b,h,m1,m0,p] + QKR[b,h,m1,m0,p]""",
    _online("b,h", "VC[b,h,f,m1*M0+m0]"),
    "output AV",
)

# -- decoding --------------------------------------------------------------------------------------------------

DECODE = _text(
    """\
# Decode step against a KV cache (Pope et al., "Efficiently Scaling Transformer Inference", MLSys 2023), with
# GQA heads as in `gqa`: P new queries (P = 1 by default; P > 1 for speculative or chunked decoding) are
# the last P of the M cached positions and see keys m <= p + M - P. Departs from the paper: the attention
# step alone, over a contiguous cache (no paging). One pass over M, unsplit (the FlashAttention-2 decode
# kernel); `decode-splitk` splits M.
input Q[B,H,E,P], K[B,G,E,M], V[B,G,F,M]
param P = 1
partition H = G * R
partition M = M1 * M0
QK[b,g,r,m1,m0,p] = sum[e] Q[b,g*R+r,e,p] * K[b,g,e,m1*M0+m0]
MQK[b,g,r,m1,m0,p] = where(m1*M0+m0 <= p + M - P, QK[b,g,r,m1,m0,p], -inf)""",
    _online("b,g,r", "V[b,g,f,m1*M0+m0]", scores="MQK"),
    "output AV",
)

DECODE_SPLITK = _text(
    """\
# Split-K decoding (Dao, Haziza, Massa and Sizov, "Flash-Decoding for long-context inference", 2023): the
# cache M = S * M1 * M0 is cut into S splits that run the online softmax independently (running max RM,
# sum RL and output RO per split), then a combine step rescales the S partials by exp(RM_s - max_s RM_s).
# Heads and masking as in `decode`. Departs from the paper: the partials are kept unnormalised (RO, RL and
# their max) instead of a normalised output and its log-sum-exp, which is the same algebra without the log
# and needs no special case for a split that is fully masked. Three passes over M by the pass analysis: the
# splits traverse the cache once, then the combine traverses the S partials (S is a part of M) twice, for
# their max and for the weighted sums; those two touch S values per query, not the cache.
input Q[B,H,E,P], K[B,G,E,M], V[B,G,F,M]
param P = 1
partition H = G * R
partition M = S * M1 * M0
QK[b,g,r,s,m1,m0,p] = sum[e] Q[b,g*R+r,e,p] * K[b,g,e,s*M1*M0+m1*M0+m0]
MQK[b,g,r,s,m1,m0,p] = where(s*M1*M0+m1*M0+m0 <= p + M - P, QK[b,g,r,s,m1,m0,p], -inf)""",
    _online("b,g,r,s", "V[b,g,f,s*M1*M0+m1*M0+m0]", scores="MQK", init=_GUARD, out=None),
    """\
GM[b,g,r,p] = max[s] RM[b,g,r,s,M1,p]
WS[b,g,r,s,p] = exp(RM[b,g,r,s,M1,p] - GM[b,g,r,p])
DS[b,g,r,p] = sum[s] RL[b,g,r,s,M1,p] * WS[b,g,r,s,p]
NS[b,g,r,f,p] = sum[s] RO[b,g,r,s,M1,f,p] * WS[b,g,r,s,p]
AV[b,g,r,f,p] = NS[b,g,r,f,p] / DS[b,g,r,p]
output AV""",
)

# -- windows, sinks and mixed heads ------------------------------------------------------------------------------

_POS = "m1*M0+m0"  # the key position in a tiled cascade
_CAUSAL = "p + M - P"  # the query's position


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ShapeError(f"{name} must be a positive integer, got {value!r}")


def _sink_window(scores: str, sinks: bool) -> str:
    """Causal mask keeping the last ``W`` keys (and the first ``SINK``) of each query."""
    kept = f"where({_POS} < SINK, {scores}, -inf)" if sinks else "-inf"
    inner = f"where({_POS} > {_CAUSAL} - W, {scores}, {kept})"
    return f"where({_POS} <= {_CAUSAL}, {inner}, -inf)"


def sliding_window(window: int) -> str:
    """Causal sliding-window attention: query p sees keys ``p + M - P - window < m <= p + M - P``."""
    _check_sizes(window=window)
    return _text(
        f"""\
# Sliding-window (local) attention (Beltagy et al., Longformer, 2020; Jiang et al., Mistral 7B, 2023):
# causal, each query sees its last W positions, itself included: p + M - P - W < m <= p + M - P.
# Departs from Longformer: no global tokens, and no dilation. One pass over M.
{_IO}
param W = {window}
partition M = M1 * M0
QK[b,h,m1,m0,p] = sum[e] Q[b,h,e,p] * K[b,h,e,{_POS}]
MQK[b,h,m1,m0,p] = {_sink_window("QK[b,h,m1,m0,p]", sinks=False)}""",
        _online("b,h", f"V[b,h,f,{_POS}]", scores="MQK", init=_GUARD),
        "output AV",
    )


def streaming_llm(sinks: int, window: int) -> str:
    """Attention sinks + sliding window: query p sees keys ``m < sinks`` and its last ``window`` keys."""
    _check_sizes(sinks=sinks, window=window)
    return _text(
        f"""\
# Attention sinks + window (Xiao et al., StreamingLLM, ICLR 2024): causal, each query sees the first SINK
# positions (the sinks) and its last W positions. Departs from the paper: positions are the original
# ones (the paper re-numbers positions inside its rolling cache for RoPE), and the whole prefill is one
# cascade instead of token-by-token streaming. One pass over M.
{_IO}
param SINK = {sinks}
param W = {window}
partition M = M1 * M0
QK[b,h,m1,m0,p] = sum[e] Q[b,h,e,p] * K[b,h,e,{_POS}]
MQK[b,h,m1,m0,p] = {_sink_window("QK[b,h,m1,m0,p]", sinks=True)}""",
        _online("b,h", f"V[b,h,f,{_POS}]", scores="MQK", init=_GUARD),
        "output AV",
    )


def duo_attention(sinks: int, window: int) -> str:
    """Retrieval heads (full causal attention) next to streaming heads (sinks + window)."""
    _check_sizes(sinks=sinks, window=window)
    return _text(
        f"""\
# Mixed retrieval and streaming heads (Xiao et al., DuoAttention, ICLR 2025; Tang et al., RazorAttention,
# 2024): the H retrieval heads (Q, K, V -> AV) keep full causal attention, the HS streaming heads (QS, KS,
# VS -> AVS) see only the first SINK and the last W positions; the head mix is the ratio of the
# sizes H : HS. Departs from the paper: heads come already grouped by kind (DuoAttention reorders them the
# same way to run each kind with its own kernel), the heads are not grouped (no GQA), and the sink/window
# sizes are ours. One pass over M.
{_IO}
input QS[B,HS,E,P], KS[B,HS,E,M], VS[B,HS,F,M]
param SINK = {sinks}
param W = {window}
partition M = M1 * M0
QK[b,h,m1,m0,p] = sum[e] Q[b,h,e,p] * K[b,h,e,{_POS}]
MQK[b,h,m1,m0,p] = where({_POS} <= {_CAUSAL}, QK[b,h,m1,m0,p], -inf)""",
        _online("b,h", f"V[b,h,f,{_POS}]", scores="MQK"),
        f"""\
QKS[b,hs,m1,m0,p] = sum[e] QS[b,hs,e,p] * KS[b,hs,e,{_POS}]
MQKS[b,hs,m1,m0,p] = {_sink_window("QKS[b,hs,m1,m0,p]", sinks=True)}""",
        _online("b,hs", f"VS[b,hs,f,{_POS}]", scores="MQKS", init=_GUARD, suffix="S"),
        "output AV, AVS",
    )


# -- block sparsity and sharded heads ---------------------------------------------------------------------------

BLOCK_DENSITY = 0.25
"""Fraction of key blocks a block mask keeps, as the block-sparse cascades declare it (ours: MoBA's 512-key
blocks with top-3 at 8K keys is 0.19)."""

_BLOCK_HEAD = f"""\
input Q[B,H,E,P], K[B,H,E,M], V[B,H,F,M], BM[B,H,M1,P1]
density BM = {BLOCK_DENSITY}
param M0 = 128
partition M = M1 * M0
partition P = P1 * P0
LB[b,h,m1,p1] = log(BM[b,h,m1,p1])
QK[b,h,m1,m0,p1,p0] = sum[e] Q[b,h,e,p1*P0+p0] * K[b,h,e,m1*M0+m0]"""

BLOCK_SPARSE = _text(
    """\
# Block-sparse attention with an explicit block mask (as in MoBA, Lu et al. 2025, and block-sparse
# FlashAttention): BM[b,h,m1,p1] = 1 keeps key block m1 (M0 keys) for query block p1 (P0 queries), 0 drops
# it; log(BM) is added to the scores (0 or -inf). Non-causal; every query block must keep at least one key
# block. Departs from MoBA: the mask is an input (MoBA computes it by top-k gating on mean-pooled keys) and
# selects per query block rather than per query; see `moba` for the causal form. The output is laid out
# AV[b,h,f,p1,p0] (reshape to [B,H,F,P]). For the analysis the mask's density is a parameter
# (`effective_op_counts(..., density={"BM": d})`). One pass over M.""",
    _BLOCK_HEAD,
    "MQK[b,h,m1,m0,p1,p0] = QK[b,h,m1,m0,p1,p0] + LB[b,h,m1,p1]",
    _online("b,h", "V[b,h,f,m1*M0+m0]", pq="p1,p0", scores="MQK", init=_GUARD),
    "output AV",
)

MOBA = _text(
    """\
# Mixture of block attention (Lu et al., MoBA, 2025), causal: the block mask BM[b,h,m1,p1] of
# `block-sparse` and the causal mask m <= p + M - P together; MoBA always selects the query's own block,
# so every query keeps at least itself. Departs from the paper: the selected blocks are an input (the
# paper's top-k gating is not modelled) and are chosen per query block of P0 queries, not per query.
# The output is laid out AV[b,h,f,p1,p0]. One pass over M.""",
    _BLOCK_HEAD,
    "MQK[b,h,m1,m0,p1,p0] = where(m1*M0+m0 <= p1*P0+p0 + M - P, QK[b,h,m1,m0,p1,p0] + LB[b,h,m1,p1], -inf)",
    _online("b,h", "V[b,h,f,m1*M0+m0]", pq="p1,p0", scores="MQK", init=_GUARD),
    "output AV",
)


def s2_attention(local_blocks: int) -> str:
    """S2-Attention: each head sees a strided shard of the key blocks plus its last ``local_blocks`` blocks."""
    _check_sizes(local_blocks=local_blocks)
    pos = "m1*N*M0+n*M0+m0"
    scores = "QK[b,hg,hn,m1,n,m0,p]"
    local = f"where(m1*N*M0+n*M0+LOCAL*M0 > {_CAUSAL}, {scores}, -inf)"
    mask = f"where({pos} <= {_CAUSAL}, where(n == hn, {scores}, {local}), -inf)"
    return _text(
        f"""\
# Sharded heads (Lin et al., S2-Attention: Hardware-Aware Context Sharding Among Attention Heads, 2024):
# keys come in blocks of M0; block k = m1*N + n. Head h = hg*HN + hn sees, causally, the blocks with
# n == hn (its strided shard: every N-th block, offset by head, so the HN = N shards of a head group cover
# the whole context) and the last LOCAL blocks up to its own (the local blocks of the paper's
# DKernel). Departs from the paper: one sparsity pattern for all layers (the paper mixes in dense layers)
# and the local-block count is ours. One pass over M in tiles of N blocks.
{_IO}
param LOCAL = {local_blocks}
param M0 = 64
partition H = HG * HN
partition M = M1 * N * M0
QK[b,hg,hn,m1,n,m0,p] = sum[e] Q[b,hg*HN+hn,e,p] * K[b,hg*HN+hn,e,{pos}]
MQK[b,hg,hn,m1,n,m0,p] = {mask}""",
        _online("b,hg,hn", f"V[b,hg*HN+hn,f,{pos}]", tile="n,m0", scores="MQK", init=_GUARD),
        "output AV",
    )


# -- no softmax ----------------------------------------------------------------------------------------------------

_PHI_K = "FK[b,h,e,m] = relu(K[b,h,e,m]) + exp(min(K[b,h,e,m], 0))"
_PHI_Q = "FQ[b,h,e,p] = relu(Q[b,h,e,p]) + exp(min(Q[b,h,e,p], 0))"
_STATE = """\
init S[b,h,0,e,f] = 0
init Z[b,h,0,e] = 0
KV[b,h,m1,e,f] = sum[m0] FK[b,h,e,m1*M0+m0] * V[b,h,f,m1*M0+m0]
S[b,h,m1+1,e,f] = S[b,h,m1,e,f] + KV[b,h,m1,e,f]
KZ[b,h,m1,e] = sum[m0] FK[b,h,e,m1*M0+m0]
Z[b,h,m1+1,e] = Z[b,h,m1,e] + KZ[b,h,m1,e]"""

LINEAR = _text(
    f"""\
# Linear attention (Katharopoulos et al., "Transformers are RNNs", ICML 2020), non-causal, in the chunked
# recurrent form of Lightning Attention / GLA: phi(x) = elu(x) + 1 = relu(x) + exp(min(x, 0)); per chunk of
# M0 keys the state S[e,f] += phi(K) V^T and the normaliser Z[e] += phi(K); then
# AV = phi(Q) S / phi(Q) Z. Departs from Lightning Attention / GLA: no decay or gate, and the normaliser of
# Katharopoulos et al. is kept (those models replace it by a norm layer). One pass over M.
{_IO}
partition M = M1 * M0
{_PHI_K}
{_PHI_Q}
{_STATE}
NUM[b,h,f,p] = sum[e] FQ[b,h,e,p] * S[b,h,M1,e,f]
DEN[b,h,p] = sum[e] FQ[b,h,e,p] * Z[b,h,M1,e]
AV[b,h,f,p] = NUM[b,h,f,p] / DEN[b,h,p]
output AV
"""
)

_CHUNK = f"where(m1*M0 <= {_CAUSAL}, where({_CAUSAL} < m1*M0 + M0, {{x}}, 0), 0)"  # m1 is the query's chunk

LINEAR_CAUSAL = _text(
    f"""\
# Causal linear attention (Katharopoulos et al., ICML 2020) in the chunked form of Lightning Attention-2
# (Qin et al. 2024) and GLA (Yang et al., ICML 2024): query p at position p + M - P in chunk c gets the
# state S[c] of the chunks before c (inter-chunk) plus causal phi(Q).phi(K) products inside chunk c
# (intra-chunk), over the same for the normaliser. Departs from the papers: no decay or gate, normaliser
# kept. The language cannot index the state by the query's chunk (a variable ranges over one rank), so
# XN, XD and QK are written for every (chunk, query) pair and masked to the query's own chunk:
# `op_counts` counts that dense space, `effective_op_counts` the chunked algorithm's work. One pass over M.
{_IO}
partition M = M1 * M0
{_PHI_K}
{_PHI_Q}
{_STATE}
XN[b,h,m1,f,p] = sum[e] FQ[b,h,e,p] * S[b,h,m1,e,f]
XD[b,h,m1,p] = sum[e] FQ[b,h,e,p] * Z[b,h,m1,e]
QK[b,h,m1,m0,p] = sum[e] FQ[b,h,e,p] * FK[b,h,e,m1*M0+m0]
A[b,h,m1,m0,p] = where(m1*M0+m0 <= {_CAUSAL}, where({_CAUSAL} < m1*M0 + M0, QK[b,h,m1,m0,p], 0), 0)
NX[b,h,f,p] = sum[m1] {_CHUNK.format(x="XN[b,h,m1,f,p]")}
DX[b,h,p] = sum[m1] {_CHUNK.format(x="XD[b,h,m1,p]")}
NI[b,h,f,p] = sum[m1,m0] A[b,h,m1,m0,p] * V[b,h,f,m1*M0+m0]
DI[b,h,p] = sum[m1,m0] A[b,h,m1,m0,p]
AV[b,h,f,p] = (NX[b,h,f,p] + NI[b,h,f,p]) / (DX[b,h,p] + DI[b,h,p])
output AV
"""
)

SIGMOID = f"""\
# Sigmoid attention (Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid Self-Attention",
# ICLR 2025): AV = sum_m sigmoid(Q.K + SB[h]) V, no normalisation, so no max and no denominator: one pass
# over M by construction. Departs from the paper: the bias is an input per head (the paper uses
# b = -log M for every head: pass that), non-causal, no FlashSigmoid tiling.
{_IO}, SB[H]
QK[b,h,m,p] = sum[e] Q[b,h,e,p] * K[b,h,e,m]
SG[b,h,m,p] = sigmoid(QK[b,h,m,p] + SB[h])
AV[b,h,f,p] = sum[m] SG[b,h,m,p] * V[b,h,f,m]
output AV
"""

SOFTPLUS = f"""\
# Softplus attention (Gao and Spratling, "Softplus Attention with Re-weighting Boosts Length Extrapolation
# in Large Language Models", 2025): exp is replaced by softplus and the weights are l1-normalised,
# AV = sum_m softplus(Q.K) V / sum_m softplus(Q.K). Softplus needs no max for stability, so numerator and
# denominator accumulate together: one pass over M by construction. Departs from the paper: no
# length-dependent scale (fold it into Q) and no re-weighting (sharpening) stage; non-causal.
{_IO}
QK[b,h,m,p] = sum[e] Q[b,h,e,p] * K[b,h,e,m]
SP[b,h,m,p] = softplus(QK[b,h,m,p])
SD[b,h,p] = sum[m] SP[b,h,m,p]
SNV[b,h,f,p] = sum[m] SP[b,h,m,p] * V[b,h,f,m]
AV[b,h,f,p] = SNV[b,h,f,p] / SD[b,h,p]
output AV
"""

# -- registration -------------------------------------------------------------------------------------------------

#: sizes of the registered window/sink/local-block constants
SLIDING_WINDOW = 4096  # Mistral 7B
STREAMING_SINKS, STREAMING_WINDOW = 4, 1020  # StreamingLLM's 4 sinks in a 1024-entry cache
DUO_SINKS, DUO_WINDOW = 64, 256
S2_LOCAL_BLOCKS = 4


def _divisor(n: int, cap: int) -> int:
    """The largest divisor of ``n`` not above ``cap``."""
    return max(d for d in range(1, min(cap, n) + 1) if n % d == 0)


def variant_sizes(decode: bool = False) -> Callable[[dict[str, int], Cascade], dict[str, int]]:
    """Size defaults for the variants, applied to the parts nobody gave.

    P = M (P = 1 when ``decode``); GQA groups: R = the largest divisor of H not above 4; split-K: S = the
    largest divisor of M not above 16; S2: N = the largest divisor of M not above 8 and HN = the largest
    divisor of H not above N; tiles: M0 = the largest divisor of M / (S or N) not above 256 (64 for S2
    blocks, 128 for key blocks when queries are blocked too); query blocks: P0 = the largest divisor of P not
    above 128.
    """

    def defaults(sizes: dict[str, int], cascade: Cascade) -> dict[str, int]:
        out = dict(sizes)
        out.setdefault("P", 1 if decode else out["M"])
        parts = cascade.partitions
        m_parts = parts.get("M", ())
        tiles_given = "M1" in out and "M0" in out
        if "S" in m_parts and "S" not in out and not tiles_given:
            out["S"] = _divisor(out["M"], 16)
        if "N" in m_parts and "N" not in out and not tiles_given:
            out["N"] = _divisor(out["M"], 8)
        heads = parts.get("H", ())
        if heads and not any(r in out for r in heads):
            out[heads[-1]] = _divisor(out["H"], out.get("N", 8) if "HN" in heads else 4)
        if m_parts and "M0" not in out and "M1" not in out:
            outer = out.get("S", 1) if "S" in m_parts else out.get("N", 1) if "N" in m_parts else 1
            cap = 64 if "N" in m_parts else 128 if "P" in parts else 256
            out["M0"] = _divisor(out["M"] // outer, cap)
        if "P" in parts and "P0" not in out and "P1" not in out:
            out["P0"] = _divisor(out["P"], 128)
        return out

    return defaults


_BASE = {"B": 1, "H": 8, "M": 1024, "E": 64, "F": 64}

#: name -> (text, summary, source, base sizes, decode defaults, tags)
VARIANTS: dict[str, tuple[str, str, str, dict[str, int], bool, tuple[str, ...]]] = {
    "gqa": (
        GQA,
        "grouped-query attention: G K/V heads shared by R = H/G query heads each, one pass over M",
        "Ainslie et al., GQA, EMNLP 2023",
        _BASE,
        False,
        ("softmax-family", "shared-kv"),
    ),
    "mqa": (
        MQA,
        "multi-query attention: one K/V head shared by all H query heads, one pass over M",
        "Shazeer 2019, Fast Transformer Decoding: One Write-Head is All You Need",
        _BASE,
        False,
        ("softmax-family", "shared-kv"),
    ),
    "mla": (
        MLA,
        "multi-head latent attention, absorbed form: attention in the L-dim latent space, one pass over M",
        "DeepSeek-AI, DeepSeek-V2, 2024 (MLA)",
        {**_BASE, "L": 256, "ER": 32},
        False,
        ("softmax-family", "shared-kv", "latent-kv"),
    ),
    "mla-expanded": (
        MLA_EXPANDED,
        "multi-head latent attention, K and V up-projected from the latent inside the cascade, one pass",
        "DeepSeek-AI, DeepSeek-V2, 2024 (MLA)",
        {**_BASE, "L": 256, "ER": 32},
        False,
        ("softmax-family", "shared-kv", "latent-kv"),
    ),
    "decode": (
        DECODE,
        "decode step: P = 1 query (GQA heads) against an M-long KV cache, one pass over M",
        "Pope et al., Efficiently Scaling Transformer Inference, MLSys 2023",
        {**_BASE, "M": 4096},
        True,
        ("softmax-family", "decode", "shared-kv", "masked"),
    ),
    "decode-splitk": (
        DECODE_SPLITK,
        "split-K decode (Flash-Decoding): S splits of the cache, then a combine over S (3 passes over M counting S)",
        "Dao, Haziza, Massa and Sizov, Flash-Decoding for long-context inference, 2023",
        {**_BASE, "M": 4096},
        True,
        ("softmax-family", "decode", "shared-kv", "masked", "split-k"),
    ),
    "sliding-window": (
        sliding_window(SLIDING_WINDOW),
        f"causal sliding-window attention, window {SLIDING_WINDOW}, one pass over M",
        "Beltagy et al., Longformer, 2020; Jiang et al., Mistral 7B, 2023",
        _BASE,
        False,
        ("softmax-family", "masked", "window"),
    ),
    "streaming-llm": (
        streaming_llm(STREAMING_SINKS, STREAMING_WINDOW),
        f"attention sinks + window: first {STREAMING_SINKS} and last {STREAMING_WINDOW} positions, one pass",
        "Xiao et al., StreamingLLM (Efficient Streaming Language Models with Attention Sinks), ICLR 2024",
        _BASE,
        False,
        ("softmax-family", "masked", "window", "sinks"),
    ),
    "duo-attention": (
        duo_attention(DUO_SINKS, DUO_WINDOW),
        f"H retrieval heads full causal + HS streaming heads with {DUO_SINKS} sinks and window {DUO_WINDOW}",
        "Xiao et al., DuoAttention, ICLR 2025; Tang et al., RazorAttention, 2024",
        {**_BASE, "H": 2, "HS": 6},
        False,
        ("softmax-family", "masked", "window", "sinks", "mixed-heads"),
    ),
    "block-sparse": (
        BLOCK_SPARSE,
        "block-sparse attention with an input block mask BM[B,H,M1,P1], non-causal, one pass over M",
        "Lu et al., MoBA, 2025; block-sparse FlashAttention (Dao et al. 2022)",
        _BASE,
        False,
        ("softmax-family", "masked", "block-sparse"),
    ),
    "moba": (
        MOBA,
        "MoBA-style causal block-sparse attention with an input block mask, one pass over M",
        "Lu et al., MoBA: Mixture of Block Attention for Long-Context LLMs, 2025",
        _BASE,
        False,
        ("softmax-family", "masked", "block-sparse"),
    ),
    "s2-attention": (
        s2_attention(S2_LOCAL_BLOCKS),
        f"sharded heads: strided key blocks per head + {S2_LOCAL_BLOCKS} local blocks, causal, one pass",
        "Lin et al., S2-Attention: Hardware-Aware Context Sharding Among Attention Heads, 2024",
        _BASE,
        False,
        ("softmax-family", "masked", "sharded-heads"),
    ),
    "linear-attention": (
        LINEAR,
        "linear attention, phi = elu + 1, chunked recurrent state S[e,f], non-causal, one pass over M",
        "Katharopoulos et al., Transformers are RNNs, ICML 2020",
        _BASE,
        False,
        ("linear",),
    ),
    "linear-attention-causal": (
        LINEAR_CAUSAL,
        "causal linear attention, chunked: inter-chunk state + intra-chunk causal products, one pass",
        "Katharopoulos et al., ICML 2020; Qin et al., Lightning Attention-2, 2024; Yang et al., GLA, ICML 2024",
        _BASE,
        False,
        ("linear", "masked"),
    ),
    "sigmoid-attention": (
        SIGMOID,
        "sigmoid attention with a per-head bias, no normalisation: one pass over M by construction",
        "Ramapuram et al., Theory, Analysis, and Best Practices for Sigmoid Self-Attention, ICLR 2025",
        _BASE,
        False,
        ("softmax-free",),
    ),
    "softplus-attention": (
        SOFTPLUS,
        "softplus attention with l1 normalisation (no max): one pass over M by construction",
        "Gao and Spratling, Softplus Attention with Re-weighting Boosts Length Extrapolation in LLMs, 2025",
        _BASE,
        False,
        ("softmax-free",),
    ),
}

for _name, (_body, _summary, _source, _base, _decode, _tags) in VARIANTS.items():
    register_cascade(
        CascadeEntry(
            name=_name,
            text=_body,
            summary=_summary,
            source=_source,
            defaults=variant_sizes(decode=_decode),
            base_sizes=_base,
            tags=("attention", "variant", *_tags),
        )
    )
