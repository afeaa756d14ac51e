"""GEMM ``C[b,m,n] = sum_k A[b,m,k] * B[b,k,n]`` as a mapping onto the GPU's spatial machine.

The mapping: CTA tiles ``BM x BN`` are the spatial tiles over the SMs (one tile per CTA), the K loop runs in
``BK`` steps through a ``stages``-deep shared-memory pipeline, and the tensor cores (the 2-D array) consume
``BM x BN x BK`` per step. The mapper tries every candidate tile that fits shared memory and the register file
(the fp32 accumulators) and keeps the fastest.

Per CTA (SM-cycles): a prologue (DRAM latency, then the first stage through the SM's share of L2), the K loop at
the tensor-core rate (the microbenchmark-calibrated GEMM efficiency), and the epilogue (the C tile out through
the SM's share of L2); co-resident CTAs hide each other's prologue and epilogue, so ``1 / CTAs-per-SM`` of it
is exposed. Tiles are padded to the tile shape and K to the MMA granularity: that padding and the
waves of CTAs over the SMs (:mod:`simulator.kernels.schedule`) are the small-size effects. DRAM traffic: A and
B once when their panels stay in L2, else re-read once per band of concurrently running tiles, plus C once.
The kernel takes ``max(compute, DRAM traffic / calibrated bandwidth)`` plus one launch. The compute path also pays
the kernel's **fill and drain**: the first wave's first K slab arrives from DRAM before any tile computes, and the
last wave's C tiles leave after the last one does (at the calibrated bandwidth; between them loads and stores
overlap the math).

**Stream-K** (wgmma devices: Hopper's persistent kernels, CUTLASS 3's stream-K tile scheduler; Osama et al.,
"Stream-K: Work-centric Parallel Decomposition for Dense Matrix-Matrix Multiplication on the GPU", PPoPP 2023):
where the tiles leave a partial last wave, the mapper also tries giving every CTA slot an equal share of all tiles'
K steps; a tile split between two slots pays an fp32 partial tile written and read back through L2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.kernels.machine import KernelPrediction, Machine, fill_drain_s, finish, need
from simulator.kernels.schedule import waves

TILES: tuple[tuple[int, int], ...] = (
    *((256, 128), (128, 256), (128, 128), (128, 64), (64, 128), (64, 64), (64, 32)),
    *((32, 128), (16, 128), (16, 256)),
)
"""Candidate CTA tiles (BM, BN), as CUTLASS/cuBLAS kernels use; BM 16 and 32 are the skinny (decode) tiles of
warp-level MMA (m16n8k16)."""

SPLITS = (1, 2, 4, 8, 16)
"""Split-K factors: when the output tiles cannot fill the SMs, K is split and fp32 partials are reduced."""

K_STEPS = (64, 32)
"""BK, K elements per pipeline stage: 64, or 32 where a 64-deep pipeline of the tile does not fit shared memory
(small threadgroup memories such as Apple's 32 KiB)."""
MMA_K = 16  # K granularity of one tensor-core instruction for 16-bit types (scaled by 2 / element bytes)


@dataclass(frozen=True)
class GemmTile:
    """One candidate mapping: the CTA tile, pipeline depth and CTAs per SM."""

    bm: int
    bn: int
    bk: int
    stages: int
    per_sm: int
    smem_bytes: int


def tile_fits(m: Machine, bm: int, bn: int) -> GemmTile | None:
    """The tile with the deepest pipeline (2..4 stages, BK 64 before 32) that fits shared memory and registers,
    or None."""
    spec = m.spec
    acc_bytes = bm * bn * 4  # fp32 accumulators in registers
    if acc_bytes > 0.75 * spec.regs_bytes_per_sm:
        return None
    for bk in K_STEPS:
        for stages in (4, 3, 2):
            smem = stages * (bm + bn) * bk * m.elem_bytes
            if smem <= spec.smem_bytes_per_sm:
                per_sm = max(
                    1, min(int(spec.smem_bytes_per_sm // smem), int(0.75 * spec.regs_bytes_per_sm // acc_bytes), 2)
                )
                return GemmTile(bm, bn, bk, stages, per_sm, smem)
    return None


def _mma_k(m: Machine) -> int:
    return MMA_K * 2 // m.elem_bytes if m.elem_bytes <= 2 else 8


def _one(
    m: Machine, t: GemmTile, b: int, mm: int, n: int, k: int, split: int, stream_k: bool = False
) -> tuple[float, dict, dict, float]:
    tiles_m, tiles_n = math.ceil(mm / t.bm), math.ceil(n / t.bn)
    n_ctas = b * tiles_m * tiles_n * split
    k_pad = math.ceil(k / _mma_k(m)) * _mma_k(m)
    k_steps = math.ceil(k_pad / (t.bk * split))
    e = m.elem_bytes
    slots = m.sms * t.per_sm
    step_bytes = (t.bm + t.bn) * t.bk * e
    step = max(2.0 * t.bm * t.bn * t.bk / m.tensor_rate, step_bytes / m.l2_share_bytes_per_clock)
    mainloop = k_steps * step
    prologue = m.latency_s * m.clock_hz + step_bytes / m.l2_share_bytes_per_clock
    epilogue = t.bm * t.bn * (e if split == 1 else 4) / m.l2_share_bytes_per_clock
    cta = mainloop + (prologue + epilogue) / t.per_sm
    if stream_k:  # every slot takes an equal share of all tiles' K steps; a tile split between two slots pays one
        # fp32 partial written and read back through L2 (the fix-up), and each slot up to two tile segments
        per_slot = math.ceil(n_ctas * k_steps / slots)
        fixup = 2 * t.bm * t.bn * 4 / m.l2_share_bytes_per_clock
        cta = per_slot * step + 2 * (prologue + epilogue) / t.per_sm + fixup
        compute_s = cta * t.per_sm / m.clock_hz
    else:
        compute_s = math.ceil(n_ctas / slots) * cta * t.per_sm / m.clock_hz
    a_bytes, b_bytes, c_bytes = b * mm * k * e, b * k * n * e, b * mm * n * e
    # fill and drain: the first wave's first K slab comes from DRAM before any tile computes, and the last wave's
    # C tiles go out after the last one does (both at the calibrated bandwidth; in between they overlap compute)
    first = min(n_ctas, slots)
    across = min(tiles_n, first)
    fill_bytes = (min(b * tiles_m, math.ceil(first / across)) * t.bm + across * t.bn) * t.bk * e
    last = n_ctas - (math.ceil(n_ctas / slots) - 1) * slots if not stream_k else first
    drain_bytes = last / split * t.bm * t.bn * e
    fill_drain = fill_drain_s(m, fill_bytes, drain_bytes)
    compute_s += fill_drain
    concurrent = min(n_ctas, m.sms * t.per_sm)
    side = max(1.0, math.sqrt(concurrent))
    if a_bytes + b_bytes <= 0.5 * m.spec.l2_bytes:
        dram = a_bytes + b_bytes + c_bytes
    else:
        dram = a_bytes * max(1.0, tiles_n / side) + b_bytes * max(1.0, tiles_m / side) + c_bytes
    reduce_s = 0.0
    if split > 1:  # fp32 partials written, then read back by a reduction kernel
        partials = 2.0 * split * b * mm * n * 4
        dram += partials
        reduce_s = m.launch_s + m.latency_s
    memory_s = dram / m.stream_bytes_per_s(a_bytes + b_bytes + c_bytes)
    busy = "tensor" if 2.0 * t.bm * t.bn * t.bk / m.tensor_rate >= step_bytes / m.l2_share_bytes_per_clock else "l2"
    if prologue + epilogue > mainloop:
        busy = "latency"
    times = {busy: compute_s + reduce_s, "memory": memory_s + reduce_s}
    tiles = {
        "cta_m": t.bm,
        "cta_n": t.bn,
        "cta_k": t.bk,
        "split_k": split,
        "stream_k": stream_k,
        "fill_drain_s": fill_drain,
        "stages": t.stages,
        "ctas": n_ctas,
        "ctas_per_sm": t.per_sm,
        "waves": round(waves(n_ctas, m.sms, t.per_sm), 3),
        "smem_bytes": t.smem_bytes,
        "k_padded": k_pad,
    }
    return max(times.values()), times, tiles, dram


def predict_gemm(m: Machine, *, m_: int, n: int, k: int, batch: int = 1) -> KernelPrediction:
    """Best mapping of a (batched) GEMM; flops = 2 m n k batch."""
    for name, v in (("m", m_), ("n", n), ("k", k), ("batch", batch)):
        need(isinstance(v, int) and v >= 1, f"gemm: {name} must be a positive integer, got {v!r}")
    best = None
    for bm, bn in TILES:
        t = tile_fits(m, bm, bn)
        if t is None:
            continue
        for split in SPLITS:
            if split > 1 and (
                batch * math.ceil(m_ / bm) * math.ceil(n / bn) * split > 2 * m.sms * t.per_sm or k < split * 2 * t.bk
            ):
                break
            work, times, tiles, dram = _one(m, t, batch, m_, n, k, split)
            if best is None or work < best[0]:
                best = (work, times, tiles, dram)
        n_tiles = batch * math.ceil(m_ / bm) * math.ceil(n / bn)
        if m.spec.tensor_instruction == "wgmma" and n_tiles > m.sms * t.per_sm and n_tiles % (m.sms * t.per_sm):
            work, times, tiles, dram = _one(m, t, batch, m_, n, k, 1, stream_k=True)
            if work < best[0]:
                best = (work, times, tiles, dram)
    need(
        best is not None,
        f"gemm: no CTA tile fits {m.spec.id}'s shared memory ({m.spec.smem_bytes_per_sm:.0f} bytes per SM, "
        f"smem_bytes_per_sm) for dtype {m.dtype}",
    )
    _, times, tiles, dram = best
    e = m.elem_bytes
    compulsory = batch * (m_ * k + k * n + m_ * n) * e
    return finish(
        m,
        op="gemm",
        kernel="gemm",
        flops=2.0 * batch * m_ * n * k,
        hbm_bytes=dram,
        times=times,
        tiles=tiles,
        compulsory_bytes=compulsory,
    )
