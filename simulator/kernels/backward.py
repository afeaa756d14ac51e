"""Attention backward kernels as mappings onto the GPU's spatial machine (``predict --op sdpa --direction bwd``).

**Fused (FlashAttention-2/-3 style, Dao 2023 Algorithm 2; Shah et al. 2024 §3).** Three kernels:

1. *preprocess*: ``D = rowsum(dO * O)`` per query row (reads dO and O, writes D in fp32) and the fp32 dQ
   accumulator cleared (written once);
2. *main*: one CTA owns ``Bc`` keys of one (batch, K/V-group, head) and keeps its dK and dV accumulators in
   registers; it walks the query blocks of ``Br`` rows that see its keys (causal: the blocks at and below the
   diagonal; a window: the blocks whose rows reach back to it). Per visited tile it **recomputes** the scores
   and the probabilities from the row statistics the forward pass saved (``P = exp(S - L)``; no ``Br x Bc``
   matrix ever reaches DRAM) and runs five matrix multiplies, each ``2 Br Bc d`` FLOPs: ``S = Q K^T`` (the
   recompute), ``dV += P^T dO``, ``dP = dO V^T``, ``dK += dS^T Q`` and ``dQ_i += dS K``; between them the
   elementwise work ``P = exp(S - L)`` (one exp, one subtract per pair) and ``dS = P * (dP - D)`` (a subtract
   and a multiply per pair; the softmax scale folds into the FMA), plus a ``select`` on tiles that straddle the
   mask. ``dQ_i`` is added to the fp32 accumulator with atomics through L2 (``Br x d x 4`` bytes per tile);
3. *postprocess*: dQ converted from the fp32 accumulator to the dtype (and, for grouped K/V heads, dK and dV
   summed over the query heads of a group: FlashAttention-2 writes them per query head).

Per tile, in SM-cycles, with ``T`` tensor, ``S`` exp, ``F`` FP32-lane and ``M`` shared-memory times (the same
rules as the forward kernels, :func:`simulator.kernels.attention.tile_cycles`): fa2 serializes the
elementwise work between the matrix multiplies, ``max(T, M) + S + F``; in fa3 the consumer warpgroups share
each query tile and run in step (the forward pass's ping-pong needs independent row blocks per warpgroup), and
only ``dP = dO V^T``, which does not need ``P``, overlaps the exp:
``max(T/5 + max(S + F_1, T/5) + F_2 + 3T/5, M)`` with ``F_1`` the subtract before the exp and ``F_2`` the rest.
Shared-memory traffic is counted per matrix multiply from the warp layout
(:func:`_operand_bytes`); the streamed ``Q_i``, ``dO_i``, ``L_i``, ``D_i`` tiles and the dQ atomics pass
through the SM's share of L2. CTAs are list-scheduled over the SMs (longest first), each paying its exposed
prologue (DRAM latency, its K/V block and the first query tile) and epilogue (dK, dV out).

FLOPs are counted as FlashAttention's benchmarks count the backward pass: 2.5x the forward's (five matrix
multiplies against two), masked pairs excluded; the per-kernel parts report what each kernel executes.

**Unfused (PyTorch autograd of standard attention and of the math backend).** The forward chain saved the
probabilities ``P``; the backward is ``dV = P^T dO`` and ``dP = dO V^T`` (batched GEMMs), the softmax backward
``dS = P * (dP - rowsum(dP * P))`` (a row-wise kernel reading P and dP, writing dS), the scale applied to the
gradient (``baddbmm``'s ``alpha``: a multiply over dQ and dK; the math backend scales Q and K by
``sqrt(scale)`` in its forward, so its backward multiplies dQ and dK), ``dQ = dS K`` and ``dK = dS^T Q``
(batched GEMMs) and, for grouped K/V heads, dK and dV summed over the heads of a group. The math backend's
``_safe_softmax`` adds a ``where`` backward over the scores. Every intermediate goes through DRAM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from simulator.kernels.attention import check_fused, useful_pairs
from simulator.kernels.elementwise import predict_elementwise, predict_rowwise
from simulator.kernels.gemm import predict_gemm
from simulator.kernels.machine import KernelPrediction, Machine, fill_drain_s, finish, need
from simulator.kernels.schedule import makespan_cycles, waves

DIRECTIONS: tuple[str, ...] = ("fwd", "bwd", "fwd+bwd")
"""What ``predict --op sdpa`` costs: the forward pass, the backward pass, or both (a training step's attention)."""

BWD_FLOP_RATIO = 2.5
"""Backward FLOPs / forward FLOPs as FlashAttention's benchmarks count them: five matrix multiplies of
``2 Br Bc d`` per tile (the score recompute included) against the forward's two."""

FMA_PER_PAIR = 3
"""FP32-lane ops per (query, key) pair of a backward tile: ``S - L`` before the exp, ``dP - D`` and ``* P``."""


@dataclass(frozen=True)
class BwdTile:
    """One backward mapping: ``Bc`` keys per CTA, ``Br`` query rows per step, warps, CTAs per SM."""

    br: int
    bc: int
    warps: int
    per_sm: int
    smem_bytes: int
    regs_per_thread: int

    @property
    def warpgroups(self) -> int:
        """Consumer warpgroups (fa3: one of the CTA's warpgroups is the producer)."""
        return max(1, self.warps // 4 - 1)


def bwd_candidates(m: Machine, kernel: str, d: int) -> list[BwdTile]:
    """Every backward tile that fits the SM's shared memory and register file at head dim ``d``.

    Registers (fp32 words per thread): the dK and dV accumulators (``2 Bc d``) and the ``S`` and ``dP`` tiles
    (``2 Br Bc``) over the CTA's (consumer) threads, plus 32 for addresses and indices. Shared memory: the K
    and V blocks, the Q and dO tiles (double-buffered, or single where that does not fit, as FlashAttention-2
    does at head dim 256), and the ``Br x Bc`` dS tile that the dQ multiply reads transposed. fa3: 1-3 consumer
    warpgroups and one producer warpgroup."""
    spec, e = m.spec, m.elem_bytes
    regs_total = spec.regs_bytes_per_sm / 4
    out = []
    shapes = (
        [(br, bc, w, st) for br in (64, 128) for bc in (64, 128) for w in (4, 8) for st in (2, 1)]
        if kernel == "fa2"
        else [(br, bc, 4 * wgs + 4, 2) for br in (64, 128) for bc in (64, 128) for wgs in (1, 2, 3)]
    )
    for br, bc, warps, stages in shapes:
        compute_warps = warps if kernel == "fa2" else warps - 4  # fa3: one producer warpgroup
        regs = (2 * bc * d + 2 * br * bc) / (compute_warps * 32) + 32
        smem = (2 * bc * d + stages * 2 * br * d + br * bc) * e + stages * 2 * br * 4
        if regs > 255 or smem > spec.smem_bytes_per_sm:
            continue
        if kernel == "fa2":
            per_sm = min(
                int(spec.smem_bytes_per_sm // smem),
                int(regs_total // (warps * 32 * max(regs, 128))),
                spec.max_warps_per_sm // warps,
            )
        else:  # the producer warpgroup gives its registers to the consumers (setmaxnreg: 24 per thread)
            per_sm = int(regs_total - 128 * 24 >= compute_warps * 32 * regs)
        if per_sm >= 1:
            out.append(BwdTile(br, bc, warps, per_sm, smem, math.ceil(regs)))
    return out


def _operand_bytes(kernel: str, t: BwdTile, d: int, e: int) -> float:
    """Shared-memory bytes one tile's five matrix multiplies read, plus ``P`` and ``dS`` written there.

    The products, as FlashAttention-2's backward runs them: ``S = Q K^T`` and ``dP = dO V^T`` (``Br x Bc``,
    operands from shared memory), ``P`` and ``dS`` written to shared memory, then ``dV = P^T dO``,
    ``dK = dS^T Q`` (``Bc x d``, ``P^T`` and ``dS^T`` read transposed) and ``dQ = dS K`` (``Br x d``). fa2
    (warp-level mma): the warps tile each product's output as a ``wm x wn`` grid (the layout that reads the
    least, as FlashAttention-2 picks one per product); each warp reads its rows of A and its columns of B, so A
    is read ``wn`` times and B ``wm`` times. fa3 (wgmma, 64 rows per warpgroup instruction): the consumer
    warpgroups split the rows in 64-row slices (or the columns, where that reads less), and each reads the
    other operand whole."""
    br, bc = t.br, t.bc
    products = ((br, bc, d), (br, bc, d), (bc, d, br), (bc, d, br), (br, d, bc))  # (M, N, K): S, dP, dV, dK, dQ
    if kernel == "fa2":
        grids = [(wm, t.warps // wm) for wm in (1, 2, 4, 8, 16) if t.warps % wm == 0 and wm <= t.warps]
    else:
        grids = [(t.warpgroups, 1), (1, t.warpgroups)]
    total = 2.0 * br * bc  # P and dS written
    for rows, cols, depth in products:
        total += min(wn * rows * depth + wm * cols * depth for wm, wn in grids)
    return total * e


def _tile_cycles(m: Machine, kernel: str, t: BwdTile, d: int, masked: bool) -> tuple[float, dict[str, float]]:
    pairs = t.br * t.bc
    tensor = 5 * 2.0 * pairs * d / m.tensor_rate
    sfu = pairs / m.sfu_rate
    fma = pairs * (FMA_PER_PAIR + (1 if masked else 0)) / m.fma_rate
    smem = _operand_bytes(kernel, t, d, m.elem_bytes) / m.smem_rate
    streamed = (2 * t.br * d * m.elem_bytes + 2 * t.br * 4) + t.br * d * 4  # Q_i, dO_i, L_i, D_i in; dQ atomics
    l2 = streamed / m.l2_share_bytes_per_clock
    if kernel == "fa2":
        cycles = max(tensor, smem) + sfu + fma
    else:
        # the consumer warpgroups share each Q_i / dO_i tile and run in step (no ping-pong in the backward pass):
        # the score recompute S, then the exp and S - L while dP = dO V^T runs (it does not need P), then
        # dS = P * (dP - D), then dV, dK and dQ, which wait on P and dS
        step = tensor / 5
        sub = pairs / m.fma_rate
        chain = step + max(sfu + sub, step) + (fma - sub) + 3 * step
        cycles = max(chain, smem)
    parts = {"tensor": tensor, "sfu": sfu, "fma": fma, "smem": smem, "l2": l2}
    return max(cycles, l2), parts


def _row_blocks(s: dict, br: int, bc: int) -> tuple[np.ndarray, np.ndarray]:
    """Per key block: query blocks that see any of its keys, and those that straddle the mask (bottom-right
    aligned causal; a window of the ``window`` keys ending at each query)."""
    sq, skv, causal, window = s["seq_q"], s["seq_kv"], s["causal"], s["window"]
    offset = skv - sq
    k_lo = np.arange(0, skv, bc)
    k_hi = np.minimum(k_lo + bc, skv) - 1
    q_lo = np.arange(0, sq, br)
    q_hi = np.minimum(q_lo + br, sq) - 1
    # a query row r sees keys (r + offset - window, r + offset] (causal), all keys otherwise
    ql, qh = q_lo[None, :], q_hi[None, :]
    kl, kh = k_lo[:, None], k_hi[:, None]
    if causal:
        top = qh + offset  # the last key the block's last row sees
        bottom = ql + offset
        any_seen = kl <= top
        all_seen = kh <= bottom
        if window:
            any_seen &= kh > bottom - window
            all_seen &= kl > top - window
    else:
        any_seen = np.ones((k_lo.size, q_lo.size), dtype=bool)
        all_seen = any_seen
    visited = any_seen.sum(axis=1).astype(np.float64)
    straddling = (any_seen & ~all_seen).sum(axis=1).astype(np.float64)
    return visited, straddling


def predict_fused_bwd(m: Machine, kernel: str, s: dict) -> KernelPrediction:
    """The FlashAttention-2/-3 backward (module docstring) of an sdpa shape: preprocess, main, postprocess."""
    b, h, hk, sq, skv, d = s["batch"], s["heads"], s["kv_heads"], s["seq_q"], s["seq_kv"], s["head_dim"]
    check_fused(m, kernel, d)
    need(m.dtype in ("fp16", "bf16"), f"{kernel} backward: dtype {m.dtype} not supported; it runs fp16, bf16 "
         "(FlashAttention-3's FP8 path is forward only)")  # fmt: skip
    e = m.elem_bytes
    tiles = bwd_candidates(m, kernel, d)
    need(bool(tiles), f"{kernel} backward: head_dim {d} does not fit {m.spec.id}'s shared memory "
         f"(smem_bytes_per_sm) and register file (regs_bytes_per_sm) for dtype {m.dtype}")  # fmt: skip
    rows = b * h * sq
    best = None
    for t in tiles:
        visited, straddling = _row_blocks(s, t.br, t.bc)
        plain, parts = _tile_cycles(m, kernel, t, d, masked=False)
        edge, _ = _tile_cycles(m, kernel, t, d, masked=True)
        prologue = m.latency_s * m.clock_hz + (2 * t.bc * d * e + 2 * t.br * d * e) / m.l2_share_bytes_per_clock
        epilogue = 2 * t.bc * d * e / m.l2_share_bytes_per_clock
        per_block = (visited - straddling) * plain + straddling * edge + (prologue + epilogue) / t.per_sm
        cta = np.sort(np.tile(per_block, b * h))[::-1]
        first = min(cta.size, m.sms * t.per_sm)  # fill: K/V blocks and first Q, dO tiles; drain: dK, dV out
        fill_drain = fill_drain_s(m, first * (2 * t.bc * d * e + 2 * t.br * d * e), first * 2 * t.bc * d * e)
        compute_s = makespan_cycles(cta, m.sms, t.per_sm) / m.clock_hz + fill_drain
        n_vis = float(visited.sum()) * b * h
        # DRAM: Q, dO, L, D and K, V read once per (head, K/V head) (re-reads hit L2), dK and dV written (per
        # query head: summed over a group afterwards), the dQ accumulator written back once
        dram = (2 * b * h * sq * d * e + 2 * rows * 4 + 2 * b * hk * skv * d * e + 2 * b * h * skv * d * e
                + rows * d * 4)  # fmt: skip
        memory_s = dram / m.dram_bytes_per_s
        time = max(compute_s, memory_s)
        if best is None or time < best[0]:
            best = (time, t, compute_s, memory_s, dram, parts, n_vis, visited.size, fill_drain)
    time, t, compute_s, memory_s, dram, parts, n_vis, key_blocks, fill_drain = best
    core = {k: v for k, v in parts.items() if k != "l2"}
    bound = "l2" if parts["l2"] >= max(core.values()) else max(core, key=core.__getitem__)
    pairs = useful_pairs(sq, skv, s["causal"], s["window"])
    fwd_flops = 4.0 * b * h * pairs * d
    compulsory = (3 * b * h * sq * d + 4 * b * hk * skv * d + b * h * sq * d) * e + 2 * rows * 4  # Q,O,dO,dQ;K,V,dK,dV
    mapping = {
        "block_m": t.br,
        "block_n": t.bc,
        "warps": t.warps,
        "ctas": key_blocks * b * h,
        "ctas_per_sm": t.per_sm,
        "waves": round(waves(key_blocks * b * h, m.sms, t.per_sm), 3),
        "smem_bytes": t.smem_bytes,
        "regs_per_thread": t.regs_per_thread,
        "query_tiles_visited": round(n_vis),
        "fill_drain_s": fill_drain,
        "tile_cycles": {k: round(v, 1) for k, v in parts.items()},
    }
    main = finish(m, op="sdpa", kernel=f"{kernel}-bwd-main", flops=BWD_FLOP_RATIO * fwd_flops, hbm_bytes=dram,
                  times={bound: compute_s, "memory": memory_s}, tiles=mapping, compulsory_bytes=0.0,
                  exp_ops=n_vis * t.br * t.bc)  # fmt: skip
    pre = predict_rowwise(m, kernel=f"{kernel}-bwd-preprocess", rows=rows, cols=d, read_bytes=2 * rows * d * e,
                          write_bytes=rows * 4 + rows * d * 4, sfu_ops=0, fma_ops=2 * rows * d)  # fmt: skip
    pre = replace(pre, op="sdpa")
    parts_list = [pre, main]
    post = predict_elementwise(m, elements=rows * d, reads=1, kernel=f"{kernel}-bwd-dq-convert", read_bytes=4)
    parts_list.append(post)
    if hk < h:  # dK, dV per query head summed over the group
        parts_list.append(predict_elementwise(m, elements=2 * b * hk * skv * d, reads=h // hk,
                                              kernel="dkv-group-sum"))  # fmt: skip
    total = sum(p.time_s for p in parts_list)
    hbm = sum(p.hbm_bytes for p in parts_list)
    pred = finish(m, op="sdpa", kernel=f"{kernel}-bwd", flops=BWD_FLOP_RATIO * fwd_flops, hbm_bytes=hbm,
                  times={bound: total - m.launch_s}, tiles=mapping, compulsory_bytes=compulsory,
                  exp_ops=n_vis * t.br * t.bc,
                  notes=(f"{kernel} backward: preprocess (D = rowsum(dO*O)), main (Bc = {t.bc} keys per CTA, "
                         f"Br = {t.br} query rows per step, P recomputed per tile), dQ convert",))  # fmt: skip
    return replace(pred, parts=tuple(parts_list))


def predict_unfused_bwd(m: Machine, kernel: str, s: dict) -> KernelPrediction:
    """Autograd's backward of standard attention (``unfused``) or of the math backend (module docstring)."""
    b, h, hk, sq, skv, d = s["batch"], s["heads"], s["kv_heads"], s["seq_q"], s["seq_kv"], s["head_dim"]
    e = m.elem_bytes
    scores = float(b) * h * sq * skv
    need(
        scores * e * 3 <= m.spec.dram_bytes,
        f"{kernel} backward: the {b}x{h}x{sq}x{skv} saved probabilities, their gradient and the score gradient "
        f"need {scores * e * 3 / 1e9:.1f} GB; {m.spec.id} has {m.spec.dram_bytes / 1e9:.1f} GB (dram_bytes)",
    )
    bh, n = b * h, int(scores)
    parts = [
        replace(predict_gemm(m, m_=skv, n=d, k=sq, batch=bh), kernel="gemm:dV=P^T.dO"),
        replace(predict_gemm(m, m_=sq, n=skv, k=d, batch=bh), kernel="gemm:dP=dO.V^T"),
    ]
    if kernel == "math" and (s["causal"] or s["window"]):  # _safe_softmax's where, backward: where(rows, 0, dP)
        parts.append(predict_elementwise(m, elements=n, reads=2, kernel="where_rows_bwd", read_bytes=e + 1 / skv,
                                         broadcast=True))  # fmt: skip
    parts.append(predict_rowwise(m, kernel="softmax_bwd", rows=bh * sq, cols=skv, read_bytes=2 * scores * e,
                                 write_bytes=scores * e, sfu_ops=0, fma_ops=3 * scores))  # fmt: skip
    parts.append(replace(predict_gemm(m, m_=sq, n=d, k=skv, batch=bh), kernel="gemm:dQ=dS.K"))
    parts.append(replace(predict_gemm(m, m_=skv, n=d, k=sq, batch=bh), kernel="gemm:dK=dS^T.Q"))
    scaled = ("dq", "dk")
    for name in scaled:  # baddbmm's alpha (unfused) or the sqrt(scale) of Q and K (math) on the gradients
        rows = sq if name == "dq" else skv
        parts.append(predict_elementwise(m, elements=bh * rows * d, reads=1, kernel=f"scale_{name}"))
    if hk < h:  # repeat_interleave's backward: dK and dV summed over the heads of a group
        parts.append(predict_elementwise(m, elements=2 * b * hk * skv * d, reads=h // hk, kernel="dkv-group-sum"))
    pairs = useful_pairs(sq, skv, s["causal"], s["window"])
    flops = BWD_FLOP_RATIO * 4.0 * bh * pairs * d
    compulsory = (3 * bh * sq * d + 4 * b * hk * skv * d + bh * sq * d) * e
    time_s = sum(p.time_s for p in parts)
    slowest = max(parts, key=lambda p: p.time_s)
    totals: dict[str, float] = {}
    for p in parts:
        totals[p.bound] = totals.get(p.bound, 0.0) + p.time_s
    pred = finish(m, op="sdpa", kernel=f"{kernel}-bwd", flops=flops, hbm_bytes=sum(p.hbm_bytes for p in parts),
                  times={slowest.bound: time_s - m.launch_s}, tiles={"kernels": len(parts)},
                  compulsory_bytes=compulsory)  # fmt: skip
    return replace(pred, parts=tuple(parts), times_s=totals)


def combine(fwd: KernelPrediction, bwd: KernelPrediction) -> KernelPrediction:
    """A training step's attention: the forward pass then the backward pass, as one prediction whose parts are
    the two."""
    time_s = fwd.time_s + bwd.time_s
    flops = fwd.flops + bwd.flops
    bound = fwd.bound if fwd.time_s >= bwd.time_s else bwd.bound
    return replace(
        fwd,
        kernel=f"{fwd.kernel}+{bwd.kernel}",
        time_s=time_s,
        flops=flops,
        tflops=flops / time_s / 1e12,
        hbm_bytes=fwd.hbm_bytes + bwd.hbm_bytes,
        bound=bound,
        roofline_s=fwd.roofline_s + bwd.roofline_s,
        exp_ops=fwd.exp_ops + bwd.exp_ops,
        times_s={"fwd": fwd.time_s, "bwd": bwd.time_s},
        tiles={"fwd": dict(fwd.tiles), "bwd": dict(bwd.tiles)},
        parts=(fwd, bwd),
        notes=(*fwd.notes, *bwd.notes),
    )
