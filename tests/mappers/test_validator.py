"""An independent feasibility check for mappings, its own tests, and small cases the mapper tests share.

The check reads only an :class:`~simulator.mapping.EinsumMapping` and the architecture spec; it shares no
code with the cost kernel or the mapping space, so a bug in either cannot hide a mapping that overflows.
"""

from __future__ import annotations

import math

from einsum.cascade import Cascade
from einsum.lower import LoweredEinsum, lower
from simulator.mapping import EinsumMapping
from simulator.specs import ArchSpec, load_arch, with_overrides

GEMM = Cascade.from_text("input A[T,K], B[K,N]\nC[t,n] = sum[k] A[t,k] * B[k,n]", name="gemm")
THREE = ("dram", "global_buffer", "pe_reg_2d")


def gemm(t: int, k: int, n: int) -> LoweredEinsum:
    return lower(GEMM, {"T": t, "K": k, "N": n}).einsum("C")


def small_arch(rows: int = 4, cols: int = 4, buffer: int = 512, regs: int = 12, dram_bw: float = 1.88e9) -> ArchSpec:
    """fusemax-cloud shrunk: a rows x cols array, small buffers, DRAM at one word per cycle by default."""
    return with_overrides(
        load_arch("fusemax-cloud"),
        {
            "arrays.pe_2d.rows": rows,
            "arrays.pe_2d.cols": cols,
            "levels.global_buffer.capacity_words": buffer,
            "levels.global_buffer.access_width_words": 4,
            "levels.reg_file_1d.capacity_words": 64,
            "levels.pe_reg_2d.capacity_words": regs,
            "levels.dram.bandwidth_bytes_per_s": dram_bw,
        },
    )


def independent_problems(e: LoweredEinsum, arch: ArchSpec, m: EinsumMapping, *, padded: bool = False) -> list[str]:
    """Why a mapping is infeasible, computed from the mapping and the spec alone (no attnscope cost code).

    Factors multiply to each variable's size (at least, when padded); every array axis holds its spatial
    factors; the outermost level holds every tensor; every level holds the tiles it keeps. A level's tile of
    a tensor spans, per variable indexing it, the product of the variable's temporal bounds at that level
    and below, times its spatial factors if the level sits above the PEs (it serves all of them).
    """
    problems = []
    array = arch.array(m.array)
    axes = list(array.shape) + ([array.instances] if array.instances > 1 else [])
    if len(m.spatial) != len(axes):
        problems.append(f"{len(m.spatial)} spatial axes, array has {len(axes)}")
    for var, size in zip(e.vars, e.var_sizes.tolist(), strict=True):
        product = math.prod(b for loops in (*m.temporal, *m.spatial) for v, b in loops if v == var)
        if product < size or (not padded and product != size):
            problems.append(f"{var}: factors multiply to {product}, size {size}")
    for a, loops in enumerate(m.spatial):
        used = math.prod(f for _, f in loops)
        if a < len(axes) and used > axes[a]:
            problems.append(f"axis {a}: {used} PEs used, {axes[a]} available")
    if set(m.keep[0]) != set(e.tensors):
        problems.append(f"{m.levels[0]} must hold every tensor, holds {sorted(m.keep[0])}")
    first_per_pe = next(i for i, name in enumerate(m.levels) if arch.level(name).per_pe_of == m.array)
    spatial = {v: math.prod(f for loops in m.spatial for w, f in loops if w == v) for v in e.vars}
    for l, name in enumerate(m.levels):
        capacity = arch.level(name).capacity_words
        if capacity is None:
            continue
        extent = {v: math.prod(b for loops in m.temporal[l:] for w, b in loops if w == v) for v in e.vars}
        if l < first_per_pe:
            extent = {v: extent[v] * spatial[v] for v in e.vars}
        words = 0
        for t, row in zip(e.tensors, e.incidence, strict=True):
            if t in m.keep[l]:
                words += math.prod(extent[v] for v, on in zip(e.vars, row, strict=True) if on)
        if words > capacity:
            problems.append(f"{name}: holds {words} words, capacity {capacity}")
    return problems


# --------------------------------------------------------------------------------------------------------
# The check itself is checked on hand-written mappings.


def _nest(temporal, spatial, keep_buffer=("A", "B", "C")) -> EinsumMapping:
    return EinsumMapping(
        array="pe_2d",
        levels=THREE,
        temporal=temporal,
        spatial=spatial,
        keep=(frozenset("ABC"), frozenset(keep_buffer), frozenset("ABC")),
    )


def test_validator_accepts_a_fitting_nest_and_names_each_fault():
    e, arch = gemm(16, 8, 8), small_arch(4, 4, buffer=512, regs=12)
    fine = _nest(((("t", 2),), (("k", 8), ("t", 2), ("n", 2)), ()), ((("t", 4),), (("n", 4),)))
    assert independent_problems(e, arch, fine) == []
    short = _nest(((("t", 2),), (("k", 8), ("n", 2)), ()), ((("t", 4),), (("n", 4),)))
    assert independent_problems(e, arch, short) == ["t: factors multiply to 8, size 16"]
    wide = _nest(((("t", 2),), (("k", 8), ("n", 1)), ()), ((("t", 8),), (("n", 8),)))
    assert "axis 0: 8 PEs used, 4 available" in independent_problems(e, arch, wide)
    # Registers hold the k loop: A 1 x 8 + B 8 x 1 + C 1 x 1 = 17 words per PE.
    fat_regs = _nest(((("t", 2),), (("t", 2), ("n", 2)), (("k", 8),)), ((("t", 4),), (("n", 4),)))
    assert independent_problems(e, arch, fat_regs) == ["pe_reg_2d: holds 17 words, capacity 12"]
    # Buffer (above the PEs, so spatial factors count): t 2 x 4, k 8, n 2 x 4: A 64 + B 64 + C 64 words.
    tiny_buffer = small_arch(4, 4, buffer=128, regs=12)
    assert independent_problems(e, tiny_buffer, fine) == ["global_buffer: holds 192 words, capacity 128"]
    assert independent_problems(e, tiny_buffer, _nest(fine.temporal, fine.spatial, ("C",))) == []
