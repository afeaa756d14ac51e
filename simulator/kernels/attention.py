"""Attention forward kernels as mappings of attention cascades onto the GPU's spatial machine.

**Fused (FlashAttention-style).** One CTA owns ``Br`` query rows of one head and walks the keys in ``Bc``
tiles; what a tile does is read off the cascade (:mod:`simulator.kernels.variants`, the one fused model:
``predict --op sdpa`` on fa2/fa3 costs the registered dense, causal or sliding-window cascade there). Here
are the per-tile cycles that model uses: ``mac`` ops run on the tensor cores (2-D array), ``exp`` on the
special-function units, everything else (max, sub, add, mul, a mask's ``select``) on the FP32 lanes (1-D
arrays). K/V tiles stream through shared memory. Per tile, in SM-cycles, with ``T`` tensor, ``S`` exp, ``F``
FP32-lane and ``M`` shared-memory times:

* ``fa2`` (FlashAttention-2, warp-level ``mma``): every warp reads whole K and V tiles from shared memory into
  registers; on a ``wgmma`` device ``mma`` reaches only the preset's ``mma_fraction`` of the tensor rate. The
  softmax is serialized between the two matmuls: ``max(T, M) + S + F``.
* ``fa3`` (FlashAttention-3, ``wgmma`` devices only): warpgroup MMA reads operands from shared memory; ``Br /
  64`` consumer warpgroups each run a 2-stage GEMM-softmax pipeline (the next tile's ``S`` GEMM and this tile's
  ``P V`` issued together, the softmax of ``S`` under ``P V``) and ping-pong (named barriers give the tensor
  cores to one warpgroup's GEMMs while the others run their softmax). A warpgroup's chain per tile is its
  ``S`` GEMM, the wgmma latency exposed at the wait on ``S`` (:data:`WGMMA_LATENCY_CYCLES`, a cited
  microbenchmark), its exp and FP32 work, and the wait on ``O``: ``C = max(g + w_S + (S + F) / n, 2 g + w_O)``
  with ``g = T / 2n`` (:func:`fa3_chain_cycles`). The tile takes ``max(T, C, S, F, M)``: with two or more
  warpgroups the others' GEMMs hide the softmax and the waits unless the chain is longer than all GEMMs.

Shared-memory capacity and the register file bound the tile (:func:`flash_candidates`; the mapper tries every
candidate and keeps the fastest). A CTA also pays a prologue (DRAM latency, Q and the first K/V tile through
its share of L2) and an epilogue (O out); co-resident CTAs hide each other's, so only ``1 / CTAs-per-SM`` of
it is exposed. CTAs are list-scheduled over the SMs (fa3 longest first, as its tile scheduler does).

**Decode (flash-decoding).** A few query rows against a long KV cache: the query rows of a GQA group are packed
into one tile, the keys are split ``s`` ways (split-K) so that enough CTAs fill the SMs, and a second kernel
combines the fp32 partial outputs. The mapper picks ``s``. Each CTA streams its K/V through its share of L2.

**Unfused ("standard" attention, as PyTorch eager runs it).** QK^T as a batched GEMM writing the scores (the
softmax scale folded into it, as ``baddbmm(alpha=scale)``), a causal mask added by an elementwise kernel, a row
softmax, and P.V as a batched GEMM, each a kernel with its own launch, every intermediate through DRAM (plus
K/V expansion copies for GQA).

**Math (PyTorch's math SDPA backend, ``_scaled_dot_product_attention_math``, as torch 2.13 runs it).** Q and K
each scaled by sqrt(scale) (two elementwise kernels), K/V expanded with ``repeat_interleave`` for GQA, a causal
mask built per call (``ones``, ``tril``, ``where`` over seq_q x seq_kv) and added in place to the scores, the
QK^T and P.V GEMMs, and ``_safe_softmax``: a softmax, then ``isneginf`` over the scores (one-byte result),
``all`` over each row, and a ``where`` that rewrites the probabilities, so that fully masked rows give zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from einsum.lower import lower
from simulator.kernels.elementwise import predict_elementwise, predict_softmax
from simulator.kernels.gemm import predict_gemm
from simulator.kernels.machine import UNIT_OF_OP, KernelPrediction, Machine, fill_drain_s, finish, need
from simulator.kernels.schedule import makespan_cycles, waves

KERNELS: tuple[str, ...] = ("fa2", "fa3", "unfused", "decode", "math", "cpu-flash")
"""Attention kernels: FlashAttention-2 and -3 style fused forward, unfused (standard), split-K decode, PyTorch's
math backend, and PyTorch's fused CPU flash kernel (:mod:`simulator.kernels.cpu`)."""

FUSED_DTYPES = ("fp16", "bf16")

WGMMA_LATENCY_CYCLES = 128.0
"""Completion latency of one Hopper ``wgmma`` (issue to result usable), in SM clocks: Luo et al.,
'Benchmarking and Dissecting the Nvidia Hopper GPU Architecture' (IPDPS 2024, arXiv:2402.13499), Table VIII:
dense FP16 ``m64n256k16`` from shared memory, 128.0 cycles on an H800 (FP8 ``m64n256k32`` and INT8 the same);
their extended version (arXiv:2501.12084, section 6.2) gives 128.0 cycles with N = 128 too. A microbenchmark, not
an attention timing. Jarmusch and Chandrasekaran (arXiv:2512.02189) report 32 / 64 / 128 cycles for N = 64 /
128 / 256 (the instruction's own tensor-core occupancy at the dense peak); taking 128 at every N is the larger
of the two readings at N < 256, so the latency exposed per wait (:func:`wgmma_wait_cycles`) is an upper bound."""


@dataclass(frozen=True)
class FlashTile:
    """One fused-attention mapping: Br x Bc tile, warps, pipeline stages, residency."""

    br: int
    bc: int
    warps: int
    stages: int
    per_sm: int
    smem_bytes: int
    regs_per_thread: int


@lru_cache(maxsize=256)
def tile_ops(br: int, bc: int, d: int) -> tuple[dict[str, float], dict[str, float]]:
    """Ops per unit for one Br x Bc tile, and per CTA once at the end, from the lowered dense 1-pass cascade
    (the decode kernel's tile)."""
    from workloads.registry import get_cascade

    low = lower(get_cascade("attention-1pass").cascade, {"B": 1, "H": 1, "M": bc, "M0": bc, "P": br, "E": d, "F": d})
    per_tile: dict[str, float] = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0}
    per_cta: dict[str, float] = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0}
    for e in low.einsums:
        target = per_tile if "m1" in e.vars else per_cta
        for kind, count in e.ops().items():
            unit = UNIT_OF_OP.get(kind, "fma")
            target[unit] += 2.0 * count if unit == "tensor" else float(count)
    return per_tile, per_cta


def flash_candidates(m: Machine, kernel: str, d: int) -> list[FlashTile]:
    """Every Br x Bc tile (with warps, stages, CTAs per SM) of an fa2/fa3 kernel at head dim d that fits the
    SM's shared memory and register file."""
    spec, e = m.spec, m.elem_bytes
    regs_total = spec.regs_bytes_per_sm / 4
    out = []
    if kernel == "fa2":
        for br in (64, 128):
            for bc in (32, 64, 128):
                for warps in (4, 8):
                    if br // warps < 16:
                        continue
                    regs = (br * d + br * bc) / (warps * 32) + 32
                    smem = (br + 2 * bc) * d * e
                    if regs > 255 or smem > spec.smem_bytes_per_sm:
                        continue
                    per_sm = min(
                        int(spec.smem_bytes_per_sm // smem),
                        int(regs_total // (warps * 32 * max(regs, 128))),
                        spec.max_warps_per_sm // warps,
                    )
                    if per_sm >= 1:
                        out.append(FlashTile(br, bc, warps, 1, per_sm, smem, math.ceil(regs)))
    else:
        for wgs in (1, 2, 3):
            br = 64 * wgs
            limit = min(255, 8 * int((regs_total - 128 * 24) / (128 * wgs) // 8))
            for bc in (64, 80, 96, 112, 128, 144, 176):
                regs = (64 * d + 64 * bc) / 128 + 32
                smem = (br + 2 * 2 * bc) * d * e
                if regs > limit or smem > spec.smem_bytes_per_sm:
                    continue
                out.append(FlashTile(br, bc, 4 * (wgs + 1), 2, 1, smem, math.ceil(regs)))
    return out


def _key_ranges(seq_q: int, seq_kv: int, br: int, causal: bool, window: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per query row block: first and one-past-last key index it attends to (bottom-right aligned causal), for
    the flag-described sdpa kernels (decode, unfused, math; cascades read their masks through einsum.regions)."""
    starts = np.arange(0, seq_q, br)
    ends_row = np.minimum(starts + br, seq_q)  # exclusive row end
    offset = seq_kv - seq_q
    hi = np.minimum(seq_kv, ends_row + offset) if causal else np.full_like(starts, seq_kv)
    lo = np.maximum(0, starts + offset - window + 1) if window else np.zeros_like(starts)
    return lo, np.maximum(hi, lo)


def useful_pairs(seq_q: int, seq_kv: int, causal: bool, window: int | None) -> float:
    """Query-key pairs that are not masked (the FLOP count convention of attention benchmarks)."""
    rows = np.arange(seq_q, dtype=np.float64)
    offset = seq_kv - seq_q
    hi = np.minimum(seq_kv, rows + offset + 1) if causal else np.full_like(rows, seq_kv)
    lo = np.maximum(0.0, rows + offset - window + 1) if window else np.zeros_like(rows)
    return float(np.maximum(hi - lo, 0).sum())


def _tile_cycles(m: Machine, kernel: str, t: FlashTile, d: int) -> tuple[float, dict[str, float]]:
    ops, _ = tile_ops(t.br, t.bc, d)
    e = m.elem_bytes
    return tile_cycles(m, kernel, t, ops, kv_tile_bytes=2 * t.bc * d * e, q_tile_bytes=t.br * d * e)


def wgmma_wait_cycles(m: Machine, n: int) -> float:
    """Cycles a warpgroup waits at ``wgmma.wait_group`` beyond the tensor-core time of the group it waits on:
    the group's last ``wgmma`` (m64 x ``n`` x one K step: 32 bytes of operand per row) has completed
    :data:`WGMMA_LATENCY_CYCLES` after it started, while its own occupancy of the tensor cores at the
    kernel's rate ends earlier (never negative: a wide instruction's occupancy covers the latency)."""
    k_step = 32 // m.elem_bytes
    occupancy = 2.0 * 64 * min(n, 256) * k_step / m.tensor_rate
    return max(0.0, WGMMA_LATENCY_CYCLES - occupancy)


def fa3_chain_cycles(m: Machine, t: FlashTile, tensor: float, sfu: float, fma: float, head_dim: int) -> float:
    """One consumer warpgroup's dependency chain per key tile in FlashAttention-3's forward (Shah et al. 2024,
    section 3.2, 2-stage pipelining): it issues ``S = Q K_j^T`` and the previous tile's ``O += P V`` back to back,
    waits for S (its GEMM ``g`` plus the exposed wgmma latency), runs the softmax (exp ``e`` and FP32 work
    ``f``, in program order), and waits for O (``2 g`` plus the latency) before it rescales O and issues the
    next pair: ``max(g + wait_S + e + f, 2 g + wait_O)``. The ``Br / 64`` warpgroups split the tile's
    work evenly; while one waits or runs its softmax the others' GEMMs keep the tensor cores busy (section 3.1,
    ping-pong), so the chain limits the tile only where it is longer than all warpgroups' GEMMs together."""
    groups = max(1, t.br // 64)
    g = tensor / (2 * groups)
    wait_s, wait_o = wgmma_wait_cycles(m, t.bc), wgmma_wait_cycles(m, head_dim)
    return max(g + wait_s + (sfu + fma) / groups, 2 * g + wait_o)


def tile_cycles(
    m: Machine, kernel: str, t: FlashTile, ops: dict[str, float], *, kv_tile_bytes: float, q_tile_bytes: float
) -> tuple[float, dict[str, float]]:
    """SM-cycles of one key tile with ``ops`` per unit (module docstring: fa2 ``max(T, M) + S + F``, fa3
    ``max(T, C, S, F, M)`` with ``C`` one warpgroup's chain, :func:`fa3_chain_cycles`; at least the tile's K/V
    bytes through the SM's share of L2), and the per-unit parts (fa3: and ``chain``)."""
    tensor = ops["tensor"] / m.tensor_rate
    sfu = ops["sfu"] / m.sfu_rate
    fma = ops["fma"] / m.fma_rate
    l2 = kv_tile_bytes / m.l2_share_bytes_per_clock
    if kernel == "fa2":
        smem = t.warps * kv_tile_bytes / m.smem_rate
        cycles = max(tensor, smem) + sfu + fma
        parts = {"tensor": tensor, "sfu": sfu, "fma": fma, "smem": smem, "l2": l2}
    else:
        smem = ((t.br // 64) * kv_tile_bytes + q_tile_bytes) / m.smem_rate
        head_dim = round(q_tile_bytes / (t.br * m.elem_bytes))  # the O accumulator's width: P V's wgmma N
        chain = fa3_chain_cycles(m, t, tensor, sfu, fma, head_dim)
        cycles = max(tensor, chain, sfu, fma, smem)
        parts = {"tensor": tensor, "sfu": sfu, "fma": fma, "smem": smem, "l2": l2, "chain": chain}
    return max(cycles, l2), parts


def flash_tiles(m: Machine, t: FlashTile, n_ctas: int, visited: int, parts: dict[str, float]) -> dict:
    """The chosen mapping of a fused kernel, as reported: tile, warps, stages, CTAs and waves, key tiles visited
    and the cycles per unit of one tile."""
    return {
        "block_m": t.br,
        "block_n": t.bc,
        "warps": t.warps,
        "stages": t.stages,
        "ctas": n_ctas,
        "ctas_per_sm": t.per_sm,
        "waves": round(waves(n_ctas, m.sms, t.per_sm), 3),
        "smem_bytes": t.smem_bytes,
        "regs_per_thread": t.regs_per_thread,
        "key_tiles_visited": visited,
        "tile_cycles": {k: round(v, 1) for k, v in parts.items()},
    }


def check_fused(m: Machine, kernel: str, d: int) -> None:
    """Raise a SpecError naming the limit when a fused kernel cannot run on the machine's device and dtype."""
    spec = m.spec
    need(spec.kind != "cpu", f"{kernel}: needs a GPU; {spec.id} is a cpu device, which runs cpu-flash, math or unfused")
    need(
        m.dtype in FUSED_DTYPES or (kernel == "fa3" and m.dtype == "fp8"),
        f"{kernel}: dtype {m.dtype} not supported; it runs {', '.join(FUSED_DTYPES)}" + (", fp8" * (kernel == "fa3")),
    )
    if kernel == "fa3":
        need(
            spec.tensor_instruction == "wgmma",
            f"fa3: needs warpgroup MMA (tensor_instruction wgmma, Hopper); {spec.id} has {spec.tensor_instruction}",
        )


def _flops_and_bytes(s: dict, e: int) -> tuple[float, float, float]:
    pairs = useful_pairs(s["seq_q"], s["seq_kv"], s["causal"], s["window"])
    bh = s["batch"] * s["heads"]
    flops = 4.0 * bh * pairs * s["head_dim"]
    compulsory = (
        bh * s["seq_q"] * s["head_dim"] * 2 + s["batch"] * s["kv_heads"] * s["seq_kv"] * s["head_dim"] * 2
    ) * e
    return flops, compulsory, bh * pairs


DECODE_SPLITS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
"""The split-K factors the decode mapper tries."""


DECODE_QUERIES = 16
"""At most this many query rows (per K/V head) against at least :data:`DECODE_KEYS` keys is a decode step: the
decode kernel packs them into one tile and splits the keys (``predict --op sdpa``'s default kernel, and the
kernel :func:`simulator.kernels.variants.predict_case` gives a cascade at such a shape)."""
DECODE_KEYS = 256


def predict_decode(m: Machine, s: dict, splits: tuple[int, ...] = DECODE_SPLITS) -> KernelPrediction:
    """Split-K (flash-decoding) attention of a few queries against a KV cache, plus the combine kernel.

    ``s``: the sdpa shape with ``causal`` and ``window`` flags; ``splits``: the split-K factors to try (the
    fastest is kept); one value fixes the split.
    """
    b, h, hk, sq, skv, d = s["batch"], s["heads"], s["kv_heads"], s["seq_q"], s["seq_kv"], s["head_dim"]
    e = m.elem_bytes
    lo, hi = _key_ranges(sq, skv, 1, s["causal"], s["window"])
    keys = int((hi - lo).max())
    flops, compulsory, pairs = _flops_and_bytes(s, e)
    return decode_kernel(m, rows=sq * (h // hk), groups=b * hk, keys=keys, head_dim=d,
                         kv_bytes=b * hk * keys * d * 2 * e, qo_bytes=b * h * sq * d * 2 * e,
                         partial_bytes=b * h * sq * d * 4, flops=flops, exp_ops=pairs, compulsory_bytes=compulsory,
                         splits=splits)  # fmt: skip


def decode_kernel(
    m: Machine,
    *,
    rows: int,
    groups: int,
    keys: int,
    head_dim: int,
    kv_bytes: float,
    qo_bytes: float,
    partial_bytes: float,
    flops: float,
    exp_ops: float,
    compulsory_bytes: float,
    splits: tuple[int, ...] = DECODE_SPLITS,
) -> KernelPrediction:
    """The decode kernel (module docstring) for ``groups`` (batch x K/V heads) groups of ``rows`` query rows
    packed into one tile, each visiting ``keys`` keys: ``kv_bytes`` of keys and values read, ``qo_bytes`` of
    queries and outputs, ``partial_bytes`` of fp32 partial outputs per split written and re-read by the
    combine kernel. ``flops`` and ``exp_ops`` are the useful work, reported as they are."""
    check_fused(m, "decode", head_dim)
    d, e = head_dim, m.elem_bytes
    fa = "fa3" if m.spec.tensor_instruction == "wgmma" else "fa2"
    tiles_all = flash_candidates(m, fa, d)
    need(bool(tiles_all), f"decode: head_dim {d} does not fit {m.spec.id}'s shared memory (smem_bytes_per_sm)")
    t = min(tiles_all, key=lambda x: (abs(x.br - min(max(rows, 64), 128)), -x.bc))
    m_blocks = math.ceil(rows / t.br)
    plain, parts = _tile_cycles(m, fa, t, d)
    stream = 2 * t.bc * d * e / m.l2_share_bytes_per_clock
    tile = max(plain, stream)
    best = None
    for split in splits:
        if split > 1 and keys / split < t.bc and best is not None:
            break
        per = math.ceil(math.ceil(keys / split) / t.bc)
        fixed = m.latency_s * m.clock_hz + (t.br * d * e + t.br * d * 4) / m.l2_share_bytes_per_clock
        n_ctas = groups * m_blocks * split
        first = min(n_ctas, m.sms * t.per_sm)  # fill: Q and first K/V tiles; drain: fp32 partial outputs
        compute_s = makespan_cycles(np.full(n_ctas, per * tile + fixed), m.sms, t.per_sm) / m.clock_hz
        fill_drain = fill_drain_s(m, first * (t.br * d * e + 2 * t.bc * d * e), first * t.br * d * 4)
        compute_s += fill_drain
        partial = partial_bytes * split if split > 1 else 0.0
        dram = kv_bytes + qo_bytes + partial
        main = max(compute_s, dram / m.dram_bytes_per_s)
        combine = m.launch_s + m.latency_s + 2 * partial / m.dram_bytes_per_s if split > 1 else 0.0
        total = main + combine
        if best is None or total < best[0]:
            best = (total, split, n_ctas, compute_s, dram, combine, fill_drain)
    _, split, n_ctas, compute_s, dram, combine, fill_drain = best
    bound = "stream" if stream >= plain else max(
        {"tensor": parts["tensor"], "sfu": parts["sfu"], "fma": parts["fma"]}.items(), key=lambda kv: kv[1]
    )[0]  # fmt: skip
    times = {bound if bound != "stream" else "l2": compute_s + combine, "memory": dram / m.dram_bytes_per_s + combine}
    tiles = {
        "block_m": t.br,
        "block_n": t.bc,
        "rows_per_tile": rows,
        "splits": split,
        "ctas": n_ctas,
        "ctas_per_sm": t.per_sm,
        "waves": round(waves(n_ctas, m.sms, t.per_sm), 3),
        "smem_bytes": t.smem_bytes,
        "fill_drain_s": fill_drain,
        "combine_s": combine,
    }
    return finish(m, op="sdpa", kernel="decode", flops=flops, hbm_bytes=dram, times=times, tiles=tiles,
                  compulsory_bytes=compulsory_bytes, exp_ops=exp_ops, launches=2 if split > 1 else 1)  # fmt: skip


def predict_unfused(m: Machine, kernel: str, s: dict) -> KernelPrediction:
    """Standard attention as separate kernels through DRAM (see the module docstring)."""
    b, h, hk, sq, skv, d = s["batch"], s["heads"], s["kv_heads"], s["seq_q"], s["seq_kv"], s["head_dim"]
    e = m.elem_bytes
    scores = float(b) * h * sq * skv
    held = scores * e * (3 if s["causal"] and kernel == "unfused" else 2)
    need(
        held <= m.spec.dram_bytes,
        f"{kernel}: the {b}x{h}x{sq}x{skv} score and probability matrices need {held / 1e9:.1f} GB; "
        f"{m.spec.id} has {m.spec.dram_bytes / 1e9:.1f} GB (dram_bytes)",
    )
    masked = bool(s["causal"] or s["window"])
    n_scores = int(scores)
    parts: list[KernelPrediction] = []
    if kernel == "math":
        parts.append(predict_elementwise(m, elements=b * h * sq * d, reads=1, kernel="scale_q"))
    if hk < h:
        parts.append(predict_elementwise(m, elements=2 * b * h * skv * d, reads=1, kernel="expand_kv"))
    if kernel == "math":
        parts.append(predict_elementwise(m, elements=b * h * skv * d, reads=1, kernel="scale_k"))
        if masked:  # the boolean tril mask, then its additive float form: seq_q x seq_kv, once per call
            for name, rd, wr in (("mask_ones", 0, 1), ("mask_tril", 1, 1), ("mask_where", 1, e)):
                parts.append(predict_elementwise(m, elements=sq * skv, reads=1, kernel=name, read_bytes=rd,
                                                 write_bytes=wr))  # fmt: skip
    parts.append(predict_gemm(m, m_=sq, n=skv, k=d, batch=b * h))
    if masked:  # scores + mask; the mask is one seq_q x seq_kv plane broadcast over batch and heads
        parts.append(predict_elementwise(m, elements=n_scores, reads=2, kernel="mask_add",
                                         read_bytes=e + e / (b * h), broadcast=True))  # fmt: skip
    parts.append(predict_softmax(m, rows=b * h * sq, cols=skv))
    if kernel == "math":  # _safe_softmax: isneginf(scores), all(dim=-1), where(rows, 0, probabilities)
        parts.append(predict_elementwise(m, elements=n_scores, reads=1, kernel="isneginf", write_bytes=1))
        parts.append(predict_elementwise(m, elements=n_scores, reads=1, kernel="all_rows", read_bytes=1,
                                         write_bytes=1 / skv))  # fmt: skip
        parts.append(predict_elementwise(m, elements=n_scores, reads=2, kernel="where_rows",
                                         read_bytes=e + 1 / skv, broadcast=True))  # fmt: skip
    parts.append(predict_gemm(m, m_=sq, n=d, k=skv, batch=b * h))
    flops, compulsory, pairs = _flops_and_bytes(s, e)
    time_s = sum(p.time_s for p in parts)
    slowest = max(parts, key=lambda p: p.time_s)
    totals: dict[str, float] = {}
    for p in parts:  # time by the ceiling that bound each kernel
        totals[p.bound] = totals.get(p.bound, 0.0) + p.time_s
    pred = finish(m, op="sdpa", kernel=kernel, flops=flops, hbm_bytes=sum(p.hbm_bytes for p in parts),
                  times={slowest.bound: time_s - m.launch_s}, tiles={"kernels": len(parts)},
                  compulsory_bytes=compulsory, exp_ops=pairs)  # fmt: skip
    return replace(pred, parts=tuple(parts), times_s=totals)
