"""Attention on a CPU: PyTorch's fused CPU flash-attention kernel as a mapping onto the cores.

The kernel (``aten/src/ATen/native/cpu/FlashAttentionKernel.cpp``, ``cpu_flash_attention``) splits the queries
of each (batch, head) into blocks of ``qSplitSize`` rows (256 when seq_q >= 768, 64 when >= 192, else 32) and the
keys into blocks of ``kvSplitSize`` = 512. ``at::parallel_for`` hands the (batch, head, query block) items to the
cores in contiguous chunks; a core runs its items one after another. Per (query block, key block) tile a core

* multiplies the query block by the key block (a BLAS GEMM, qb x kb x d) into an fp32 score buffer,
* scales each score row and takes its max, then exponentiates it against the running max and sums it
  (vectorized exp), rescales the output accumulator by exp(old max - new max),
* and multiplies the probabilities by the value block (a GEMM, qb x d x kb) into the fp32 accumulator;

after the last key block it divides by the row sums. Causal attention stops each query block at its diagonal
(whole 512-key blocks: the diagonal block is computed in full and masked), so it skips the blocks above it; a
sliding window (a FlexAttention block mask) also skips blocks left of the window. GQA indexes the shared K/V
head; nothing is expanded, and the query heads of a group, adjacent in the work order, find the shared K/V in
the core's cache (``smem_bytes_per_sm``: its L2) when all the keys a query block visits fit there.

Cycles per tile on one core: the two GEMMs at the calibrated GEMM rate, plus the row-softmax work, which takes
the longer of its exp + FP32-lane operations and its passes over the score buffer in the core's cache
(written by the GEMM, read and written by the scale/max pass and by the exp/sum pass, read by the second GEMM:
24 bytes per fp32 score). K and V stream once per query block (through the last-level cache when they fit
``warm_cache_bytes``, else from DRAM), Q and O once; the kernel takes the longer of the cores' makespan and that
traffic, plus one dispatch.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.kernels.attention import useful_pairs
from simulator.kernels.machine import KernelPrediction, Machine, finish, need

KV_SPLIT = 512
"""Keys per block (kvSplitSize)."""
Q_SPLITS: tuple[tuple[int, int], ...] = ((768, 256), (192, 64), (0, 32))
"""(smallest seq_q, query rows per block): the qSplitSize torch picks by query length."""
SCORE_BUFFER_BYTES = 24
"""Bytes moved through the core's cache per fp32 score: GEMM write, scale/max read+write, exp/sum read+write,
second GEMM read."""
SOFTMAX_FMA_PER_SCORE = 4
"""FP32-lane ops per score: scale, max, subtract, sum."""


def q_split(seq_q: int) -> int:
    """Query rows per block for a query length."""
    return min(seq_q, next(rows for threshold, rows in Q_SPLITS if seq_q >= threshold))


def predict_cpu_flash(m: Machine, s: dict) -> KernelPrediction:
    """PyTorch's CPU flash-attention forward (see the module docstring)."""
    need(m.spec.kind == "cpu", f"cpu-flash: PyTorch's CPU kernel; {m.spec.id} is a {m.spec.kind} device")
    b, h, hk, sq, skv, d = s["batch"], s["heads"], s["kv_heads"], s["seq_q"], s["seq_kv"], s["head_dim"]
    e = m.elem_bytes
    qb, kb = q_split(sq), min(KV_SPLIT, skv)
    starts = np.arange(0, sq, qb)
    rows = np.minimum(qb, sq - starts)
    offset = skv - sq  # causal rows are bottom-right aligned (torch's top-left equals it when seq_q == seq_kv)
    hi = np.minimum(skv, starts + rows + offset) if s["causal"] else np.full_like(starts, skv)
    lo = np.maximum(0, starts + offset - s["window"] + 1) if s["window"] else np.zeros_like(starts)
    first, last = lo // kb, -(-np.maximum(hi, lo + 1) // kb)  # key blocks [first, last) per query block
    blocks = last - first
    keys = np.minimum(last * kb, skv) - first * kb  # keys computed per query block (whole blocks)
    scores = rows * keys
    gemm = 4.0 * scores * d / m.tensor_rate
    vector = np.maximum(
        scores / m.sfu_rate + (SOFTMAX_FMA_PER_SCORE * scores + rows * d * (blocks - 1)) / m.fma_rate,
        SCORE_BUFFER_BYTES * scores / m.smem_rate,
    )
    item = gemm + vector + rows * d / m.fma_rate  # + the final division by the row sums
    items = np.tile(item, b * h)  # order (batch, head, query block), query block fastest
    chunk = math.ceil(items.size / m.sms)
    per_core = [items[i : i + chunk].sum() for i in range(0, items.size, chunk)]
    compute_s = max(per_core) / m.clock_hz
    # the query heads of a GQA group are adjacent items: they re-read the shared K/V from the core's own cache
    # when all of it that one query block visits fits there, so the last-level cache or DRAM sees it once per group
    group = h // hk if 2 * int(keys.max()) * d * e <= m.spec.smem_bytes_per_sm else 1
    kv_bytes = float(b * (h // group) * (keys * d * 2 * e).sum())
    qo_bytes = 2.0 * b * h * sq * d * e
    working_set = (2 * b * hk * skv + 2 * b * h * sq) * d * e
    memory_s = (kv_bytes + qo_bytes) / m.stream_bytes_per_s(working_set)
    parts = {"tensor": float(np.sum(gemm)), "vector": float(np.sum(vector))}
    bound = max(parts, key=parts.__getitem__)
    times = {bound: compute_s, "memory": memory_s}
    flops = 4.0 * b * h * useful_pairs(sq, skv, s["causal"], s["window"]) * d
    compulsory = (2 * b * h * sq + 2 * b * hk * skv) * d * e
    tiles = {
        "block_m": int(qb),
        "block_n": int(kb),
        "items": int(items.size),
        "items_per_core": int(chunk),
        "key_blocks_visited": int(blocks.sum()) * b * h,
    }
    return finish(m, op="sdpa", kernel="cpu-flash", flops=flops, hbm_bytes=kv_bytes + qo_bytes, times=times,
                  tiles=tiles, compulsory_bytes=compulsory, exp_ops=float(b * h * scores.sum()))  # fmt: skip
