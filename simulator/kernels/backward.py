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

**The tile is FlashAttention's, not this model's choice** (:func:`bwd_tile`): ``Br``, ``Bc``, the warps, the
warp (warpgroup) layout of each product, Q's double buffering and whether V (fa2) or ``P^T``/``dS^T`` (fa3) stay
in registers are the library's launch-template configuration per head dim and shared-memory size
(:data:`FA2_BWD_CONFIGS`, :data:`FA3_BWD_CONFIGS`, cited by repository, path and commit). The dK and dV
accumulators and the S and dP tiles fill the register file (fa3: ``setmaxnreg`` 240 per MMA thread), so one
CTA runs per SM on A100 and H100: no second CTA hides a tile's barriers or its prologue.

Per tile, in SM-cycles, with ``T_i`` tensor and ``M_i`` shared-memory times of product ``i`` (its operand
reads from the configuration's warp layout, :func:`_products`: the smaller the tile, the more bytes per FLOP),
``S`` exp and ``F`` FP32-lane times: a barrier separates dependent products, so each is a phase
``max(T_i, M_i)`` and the phases add. fa2 (``__syncthreads`` after P and dS are written and after dV, every
product a synchronous ``mma``): ``sum_i max(T_i, M_i) + W + S + F`` with ``W`` the P and dS stores. fa3 (the
MMA warpgroups share each query tile; the forward pass's ping-pong needs independent row blocks per
warpgroup): ``max(T_S, M_S) + max(S + F_1, T_dP, M_dP) + F_2 + W + max(T_dV + T_dK + T_dQ, M_dV + M_dK +
M_dQ)``: only ``dP = dO V^T``, which does not need ``P``, overlaps the exp (``F_1`` the subtract before it,
``F_2`` the rest), and the three products that need only ``P`` and ``dS`` issue back to back as asynchronous
``wgmma``. The streamed ``Q_i``, ``dO_i``, ``L_i``, ``D_i`` tiles and the dQ partials (fa2: fp32 ``atomicAdd``
by every thread, which does not wait for a reply; fa3: a producer warp's TMA reduce-add) pass through the SM's
share of L2 alongside the tile, ``max(tile, L2)``: the reduction is costed as its bytes, ``Br x d x 4`` per
visited tile (``dq_atomic_bytes``), since no atomic-throughput microbenchmark of A100 or H100 L2 is cited
here. CTAs are list-scheduled over the SMs (longest first), each paying its exposed prologue (DRAM latency,
its K/V block and the first query tile) and epilogue (dK, dV out).

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
class BwdConfig:
    """One FlashAttention backward configuration, as the library's launch template instantiates it (the kernel
    traits, not a choice of this model). ``atom_*``: warps (fa2) or MMA warpgroups (fa3) laid along the query
    rows of ``S``/``dP`` (``AtomLayoutMSdP``), along the keys of ``dK``/``dV`` (``AtomLayoutNdKV``) and along the
    query rows of ``dQ`` (``AtomLayoutMdQ``), the rest along the other output dimension."""

    br: int  # kBlockM: query rows per step
    bc: int  # kBlockN: keys per CTA (its dK, dV accumulators)
    mma_warps: int  # warps that run the matrix multiplies (fa2: all; fa3: 4 per MMA warpgroup)
    atom_sdp: int
    atom_dkv: int
    atom_dq: int
    q_stages: int = 2  # Q buffers in shared memory (fa2: No_double_buffer -> 1); fa3: Q always 2
    do_stages: int = 1  # fa3 Stages_dO (fa2 keeps one dO tile)
    ds_stages: int = 1  # fa3 Stages_dS
    v_in_regs: bool = False  # Is_V_in_regs / V_in_regs: V read from registers in dP = dO V^T
    dkv_rs: bool = False  # fa3 Mma_dKV_is_RS: dV, dK take P^T, dS^T from registers


def _fa2(br, bc, msdp, ndkv, mdq, v_in_regs, double=True):
    return BwdConfig(br, bc, 8, msdp, ndkv, mdq, q_stages=2 if double else 1, v_in_regs=v_in_regs)


FA2_BWD_CONFIGS: dict[int, tuple[tuple[int, BwdConfig], ...]] = {
    32: ((0, _fa2(128, 128, 4, 4, 4, True)),),
    64: ((144 * 1024, _fa2(128, 128, 4, 4, 4, False)), (0, _fa2(64, 128, 2, 4, 4, True))),
    96: ((0, _fa2(64, 128, 2, 4, 4, True)),),
    128: ((144 * 1024, _fa2(64, 128, 2, 4, 2, False)), (0, _fa2(64, 64, 4, 2, 2, True))),
    160: ((116 * 1024, _fa2(64, 64, 4, 4, 4, False)), (0, _fa2(64, 64, 4, 4, 4, False, double=False))),
    192: ((136 * 1024, _fa2(64, 64, 4, 2, 2, False)), (0, _fa2(64, 64, 4, 2, 2, True, double=False))),
    256: (
        (176 * 1024, _fa2(64, 64, 4, 2, 2, False)),
        (144 * 1024, _fa2(64, 64, 4, 2, 2, False, double=False)),
        (0, _fa2(64, 32, 4, 1, 2, True, double=False)),
    ),
}
"""FlashAttention-2's backward kernel traits per (rounded-up) head dim, each behind the largest shared memory
per block it asks for (the library switches on ``cudaDevAttrMaxSharedMemoryPerBlockOptin``): Dao-AILab/flash-
attention ``csrc/flash_attn/src/flash_bwd_launch_template.h`` at commit 073afd5931d6672ff4899429f83a881ff8182fe2,
``run_mha_bwd_hdim{32..256}``, no dropout: ``Flash_bwd_kernel_traits<d, kBlockM, kBlockN, kNWarps,
AtomLayoutMSdP, AtomLayoutNdKV, AtomLayoutMdQ, Is_V_in_regs, No_double_buffer>``. Every one has 8 warps."""

FA3_BWD_CONFIGS: dict[tuple[int, bool], BwdConfig] = {
    (64, False): BwdConfig(128, 128, 8, 1, 2, 2, do_stages=2, ds_stages=2, dkv_rs=True),
    (64, True): BwdConfig(128, 128, 8, 1, 2, 2, do_stages=2, ds_stages=2, dkv_rs=True),
    (96, False): BwdConfig(64, 128, 8, 1, 2, 1, do_stages=2, ds_stages=2, v_in_regs=True, dkv_rs=True),
    (96, True): BwdConfig(64, 128, 8, 1, 2, 1, do_stages=2, ds_stages=2, v_in_regs=True, dkv_rs=True),
    (128, False): BwdConfig(80, 128, 8, 1, 2, 1, do_stages=2, ds_stages=2, dkv_rs=True),
    (128, True): BwdConfig(64, 128, 8, 1, 2, 1, do_stages=2, ds_stages=2, dkv_rs=True),
    (192, False): BwdConfig(64, 96, 12, 1, 1, 1),
    (192, True): BwdConfig(64, 96, 12, 1, 1, 1),
    (256, False): BwdConfig(64, 80, 8, 1, 1, 1),
    (256, True): BwdConfig(64, 80, 8, 1, 1, 1),
}
"""FlashAttention-3's Hopper backward per (rounded-up head dim, causal or windowed): Dao-AILab/flash-attention
``hopper/flash_bwd_launch_template.h`` at commit 000786d22a0769a389c7c14828a9cfeb268066bd, ``run_mha_bwd_hdim*``
for ``Arch >= 90`` without softcap: ``kBlockM, kBlockN, Stages_dO, Stages_dS, SdP_swapAB, dKV_swapAB,
dQ_swapAB, NumMmaWarpGroups, AtomLayoutMSdP, AtomLayoutNdKV, AtomLayoutMdQ, V_in_regs`` (head dim 192 with
its own value dim: the 3-warpgroup branch). ``dkv_rs`` is ``Mma_dKV_is_RS = AtomLayoutMSdP == 1 &&
AtomLayoutNdKV == NumMmaWarpGroups && SdP_swapAB && !dKV_swapAB`` (``hopper/mainloop_bwd_sm90_tma_gmma_ws.hpp``).
One producer warpgroup besides the MMA ones."""

FA3_DQ_SMEM_MAX_HEAD_DIM = 192
"""Up to this head dim (rounded head dims below 256) FlashAttention-3's backward stages each fp32 dQ partial in
shared memory for a TMA bulk reduce-add (``dQacc_use_TMA = kHeadDim < 256`` in
``hopper/mainloop_bwd_sm90_tma_gmma_ws.hpp``, Dao-AILab/flash-attention commit
0105a8fdf2240edcc66d3ea829be989c1139e031); at 256 the MMA threads add it with float4 atomics from registers."""

FA3_BWD_REGS = {2: (24, 240), 3: (32, 160)}
"""Registers per thread (producer, MMA warpgroups) after ``setmaxnreg``, by MMA warpgroups:
``LoadRegisterRequirement`` / ``MmaRegisterRequirement`` of ``hopper/flash_bwd_kernel_sm90.h`` (Dao-AILab/flash-
attention, commit b3c68b169824a58df339e4fcb0ad5e5a3e4d4327)."""


@dataclass(frozen=True)
class BwdTile:
    """One backward mapping: the cited configuration, with its shared memory, registers and CTAs per SM."""

    config: BwdConfig
    warps: int
    per_sm: int
    smem_bytes: int
    regs_per_thread: int

    @property
    def br(self) -> int:
        return self.config.br

    @property
    def bc(self) -> int:
        return self.config.bc

    @property
    def warpgroups(self) -> int:
        """MMA (consumer) warpgroups (fa3: one more warpgroup is the producer)."""
        return max(1, self.config.mma_warps // 4)


def fa2_smem_bytes(cfg: BwdConfig, d: int, elem_bytes: int) -> int:
    """Shared memory of a FlashAttention-2 backward CTA as its kernel traits size it: Q (``q_stages`` buffers)
    and dO, then K, V, P and dS, or, with V in registers, the larger of K + V and K + P + dS (V's buffer
    reused). It reproduces the thresholds of the launch template (144 KiB for d64 128 x 128 and d128 64 x 128,
    176 KiB for d256 double-buffered, 116 KiB for d96 and d160, 136 KiB for d192)."""
    br, bc = cfg.br, cfg.bc
    kv_side = max(2 * bc * d, bc * d + 2 * br * bc) if cfg.v_in_regs else 2 * bc * d + 2 * br * bc
    return ((cfg.q_stages + 1) * br * d + kv_side) * elem_bytes


def _round_head_dim(kernel: str, d: int) -> int:
    dims = sorted(FA2_BWD_CONFIGS) if kernel == "fa2" else sorted({k for k, _ in FA3_BWD_CONFIGS})
    need(d <= dims[-1], f"{kernel} backward: head_dim {d} exceeds the largest the kernel is built for "
         f"({dims[-1]}); head dims it runs: up to {', '.join(map(str, dims))}")  # fmt: skip
    return next(x for x in dims if x >= d)


def bwd_tile(m: Machine, kernel: str, d: int, causal: bool) -> BwdTile:
    """The backward tile FlashAttention runs at head dim ``d`` on this device (:data:`FA2_BWD_CONFIGS`,
    :data:`FA3_BWD_CONFIGS`), its shared memory and register use and the CTAs per SM they leave.

    fa2: shared memory as the kernel traits size it: Q (``q_stages`` buffers) and dO, then K, V, P and dS, or,
    with V in registers, the larger of K + V and K + P + dS (V's buffer reused); registers per thread: the dK
    and dV accumulators (``2 Bc d`` fp32) and the S and dP tiles (``2 Br Bc``) over the CTA's threads, plus V
    (``Bc d`` elements) when it stays in registers, plus 32 for addresses; CTAs per SM from both budgets.
    fa3: one CTA per SM when its warpgroups' ``setmaxnreg`` registers (:data:`FA3_BWD_REGS`) fit the register
    file; shared memory is TMA-staged and the library's choice fits by construction on Hopper, so the estimate
    (Q x 2, dO, K, V, dS and P stages, the fp32 dQ tile) is reported, not enforced."""
    spec, e = m.spec, m.elem_bytes
    dd = _round_head_dim(kernel, d)
    if kernel == "fa2":
        cfg = next((c for floor, c in FA2_BWD_CONFIGS[dd] if spec.smem_bytes_per_sm >= floor), None)
        assert cfg is not None  # every table ends with a floor of 0
        br, bc = cfg.br, cfg.bc
        smem = fa2_smem_bytes(cfg, dd, e)
        threads = cfg.mma_warps * 32
        regs = (2 * bc * dd + 2 * br * bc) / threads + 32 + (bc * dd * e / 4 / threads if cfg.v_in_regs else 0)
        need(smem <= spec.smem_bytes_per_sm, f"fa2 backward: head_dim {d} needs {smem} bytes of shared memory "
             f"(kBlockM {br} x kBlockN {bc}); {spec.id} has {spec.smem_bytes_per_sm:.0f} "
             "(smem_bytes_per_sm)")  # fmt: skip
        per_sm = min(
            int(spec.smem_bytes_per_sm // smem),
            int(spec.regs_bytes_per_sm / 4 // (threads * max(regs, 128))),
            spec.max_warps_per_sm // cfg.mma_warps,
        )
        return BwdTile(cfg, cfg.mma_warps, max(per_sm, 1), smem, math.ceil(min(regs, 255)))
    cfg = FA3_BWD_CONFIGS[(dd, causal)]
    br, bc, wgs = cfg.br, cfg.bc, cfg.mma_warps // 4
    load, mma = FA3_BWD_REGS[wgs]
    smem = (2 * br * dd + cfg.do_stages * br * dd + 2 * bc * dd) * e
    smem += cfg.ds_stages * br * bc * e * (1 if cfg.dkv_rs else 2) + br * dd * 4
    per_sm = int(spec.regs_bytes_per_sm / 4 // (128 * (load + wgs * mma)))
    need(per_sm >= 1, f"fa3 backward: {wgs + 1} warpgroups at {mma} registers per MMA thread exceed "
         f"{spec.id}'s register file (regs_bytes_per_sm)")  # fmt: skip
    return BwdTile(cfg, cfg.mma_warps + 4, 1, int(smem), mma)


def _products(kernel: str, t: BwdTile, d: int, e: int) -> list[tuple[str, float, float]]:
    """The five matrix multiplies of one tile as ``(name, FLOPs, shared-memory bytes read)``.

    Each product's output ``X x Y`` (depth ``K``) is split over the MMA warps (fa2) or warpgroups (fa3) as the
    configuration lays them: ``a`` along ``X`` (:class:`BwdConfig`'s ``atom_*``), ``W / a`` along ``Y``; each
    reads its rows of the ``X x K`` operand and its columns of the ``Y x K`` one, so the first is read ``W / a``
    times and the second ``a`` times. ``S = Q K^T`` and ``dP = dO V^T`` (``Br x Bc``, depth ``d``; V from
    registers when the configuration keeps it there), ``dV = P^T dO`` and ``dK = dS^T Q`` (``Bc x d``, depth
    ``Br``; ``P^T`` and ``dS^T`` from registers in fa3's ``Mma_dKV_is_RS``), ``dQ = dS K`` (``Br x d``, depth
    ``Bc``). The smaller the tile, the more operand bytes per FLOP: this is what bounds a small tile's
    tensor-core use (as :func:`simulator.kernels.attention.tile_cycles` does for the forward tiles)."""
    c = t.config
    w = c.mma_warps if kernel == "fa2" else t.warpgroups
    br, bc = c.br, c.bc
    flops = 2.0 * br * bc * d

    def reads(x: int, y: int, k: int, a: int, x_in_regs: bool = False, y_in_regs: bool = False) -> float:
        return ((0 if x_in_regs else (w / a) * x * k) + (0 if y_in_regs else a * y * k)) * e

    return [
        ("S", flops, reads(br, bc, d, c.atom_sdp)),
        ("dP", flops, reads(br, bc, d, c.atom_sdp, y_in_regs=c.v_in_regs)),
        ("dV", flops, reads(bc, d, br, c.atom_dkv, x_in_regs=c.dkv_rs)),
        ("dK", flops, reads(bc, d, br, c.atom_dkv, x_in_regs=c.dkv_rs)),
        ("dQ", flops, reads(br, d, bc, c.atom_dq)),
    ]


def _tile_cycles(m: Machine, kernel: str, t: BwdTile, d: int, masked: bool) -> tuple[float, dict[str, float]]:
    """SM-cycles of one backward tile (module docstring) and its per-unit parts.

    The products run in dependency order with a barrier wherever the next needs the last one's result, as the
    kernels do (fa2: ``__syncthreads`` after P and dS are written and after ``dV``; fa3: named barriers between
    its warpgroups): each product is its own phase, ``max(tensor, shared memory)``, and the phases add. Products
    with no dependency between them overlap: in fa3, ``dP`` with the exp of ``P`` (it does not need P), and
    ``dV``, ``dK``, ``dQ`` issued back to back as asynchronous ``wgmma`` (one phase over the three). The dQ
    atomics (fa2: ``atomicAdd`` by every thread; fa3: a producer warp's TMA reduce-add) and the streamed
    ``Q_i``, ``dO_i``, ``L_i``, ``D_i`` pass through the SM's share of L2 alongside the tile: ``max(tile, L2)``.
    """
    pairs = t.br * t.bc
    e = m.elem_bytes
    prods = _products(kernel, t, d, e)
    phase = {n: (f / m.tensor_rate, b / m.smem_rate) for n, f, b in prods}
    written = (1 if kernel == "fa3" and t.config.dkv_rs else 2) * pairs * e / m.smem_rate  # P and dS to smem
    # Q_i and dO_i land in shared memory (fa2 cp.async, fa3 TMA) while the tile computes: bank bandwidth, async
    deposit = 2 * t.br * d * e / m.smem_rate
    # fa3 below head dim 256 (dQacc_use_TMA): the MMA warpgroups store the fp32 dQ partial to shared memory while
    # dK runs, and the producer's TMA bulk reduce-add reads it back (async); at 256 float4 atomics from registers
    dq_stage = t.br * d * 4 / m.smem_rate if kernel == "fa3" and d <= FA3_DQ_SMEM_MAX_HEAD_DIM else 0.0
    tensor = sum(x for x, _ in phase.values())
    smem = sum(y for _, y in phase.values()) + written + deposit + 2 * dq_stage
    sfu = pairs / m.sfu_rate
    fma = pairs * (FMA_PER_PAIR + (1 if masked else 0)) / m.fma_rate
    streamed = (2 * t.br * d * e + 2 * t.br * 4) + t.br * d * 4  # Q_i, dO_i, L_i, D_i in; dQ atomics
    l2 = streamed / m.l2_share_bytes_per_clock
    if kernel == "fa2":
        cycles = sum(max(x, y) for x, y in phase.values()) + written + sfu + fma
    else:
        sub = pairs / m.fma_rate
        last = [phase[n] for n in ("dV", "dK", "dQ")]
        s_t, dp_t = max(*phase["S"]), max(*phase["dP"])
        w_s, w_dp = _fa3_sdp_waits(m, t)
        cycles = (
            max(s_t + w_s + sfu + sub, s_t + dp_t + w_dp)
            + (fma - sub)
            + written
            + max(sum(x for x, _ in last), sum(y for _, y in last) + dq_stage)
        )
    parts = {"tensor": tensor, "sfu": sfu, "fma": fma, "smem": smem, "l2": l2}
    return max(cycles, smem, l2), parts


def _fa3_sdp_waits(m: Machine, t: BwdTile) -> tuple[float, float]:
    """The wgmma completion latency FlashAttention-3's backward exposes per tile (cycles beyond the tensor-core
    time, :func:`simulator.kernels.attention.wgmma_wait_cycles`, the latency the forward model charges too).

    ``hopper/mainloop_bwd_sm90_tma_gmma_ws.hpp`` (commit 0105a8fd) issues ``S`` and ``dP`` back to back, waits
    for ``S`` (``warpgroup_wait<1>``) before the exp and for ``dP`` (``warpgroup_wait<0>``) before ``dS``, after
    which nothing is in flight until ``dV`` is issued; ``dV``, ``dQ`` and ``dK`` each wait for the previous one
    only with the next already issued (``wg_wait=1``), and the next tile's ``S`` waits for ``dK`` behind ``S``
    itself, so their latency stays hidden. Per warpgroup the ``S``/``dP`` wgmma is m64 x N with N = ``Br``
    (keys along M: ``SdP_swapAB``, which ``Mma_dKV_is_RS`` requires) or ``Bc`` over the warpgroups laid along
    the keys (no swap)."""
    from simulator.kernels.attention import wgmma_wait_cycles

    c = t.config
    n = c.br // c.atom_sdp if c.dkv_rs else c.bc // max(1, t.warpgroups // c.atom_sdp)
    wait = wgmma_wait_cycles(m, n)
    return wait, wait


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
    t = bwd_tile(m, kernel, d, bool(s["causal"] or s["window"]))
    rows = b * h * sq
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
    key_blocks = visited.size
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
        "dq_atomic_bytes": n_vis * t.br * d * 4,  # fp32 dQ partials added through L2: one Br x d per visited tile
        "q_stages": t.config.q_stages,
        "v_in_regs": t.config.v_in_regs,
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
