"""The operations the harness can measure, declared as plain data (no torch here).

Each :class:`OpDecl` names the shape keys an operation needs, the masks and backends it accepts and the kernel
family the comparison report groups it under. The torch implementations live in
:mod:`validate.harness.kernels`, one per declared name; :func:`op_decl` is the registry lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from einsum.errors import RegistryError

DTYPES: tuple[str, ...] = ("fp64", "fp32", "bf16", "fp16")
"""Element types a sweep may name (the same spelling as :func:`simulator.gpu.predict`'s ``dtype``)."""

DTYPE_BYTES: Mapping[str, int] = MappingProxyType({"fp64": 8, "fp32": 4, "bf16": 2, "fp16": 2})
"""Bytes per element of each dtype."""

SDPA_BACKENDS: tuple[str, ...] = ("flash", "efficient", "cudnn", "math", "auto")
"""``scaled_dot_product_attention`` backends (``torch.nn.attention.SDPBackend``); ``auto`` lets torch choose."""

ATTENTION_KEYS = ("batch", "heads", "seq_q", "seq_kv", "head_dim")


@dataclass(frozen=True)
class OpDecl:
    """One measurable operation: what a sweep case must give for it."""

    name: str
    """Operation name as sweeps and CSV rows spell it."""
    family: str
    """Kernel family the report groups it under (gemm, softmax, sdpa, unfused, flex, decode, copy, exp)."""
    shape: tuple[str, ...]
    """Required shape keys (positive integers)."""
    optional: Mapping[str, int | None]
    """Optional shape keys and their defaults (None: derived, e.g. ``kv_heads`` = ``heads``)."""
    masks: tuple[str, ...] = ("none",)
    """Masks it accepts; the first is the default."""
    backends: tuple[str, ...] = ("default",)
    """Backends it accepts; the first is the default."""
    summary: str = ""
    """One line for ``--help`` texts and the schema."""


_OPS: tuple[OpDecl, ...] = (
    OpDecl("matmul", "gemm", ("m", "n", "k"), {}, summary="torch.matmul of (m,k) by (k,n)"),
    OpDecl("bmm", "gemm", ("batch", "m", "n", "k"), {}, summary="torch.bmm of (batch,m,k) by (batch,k,n)"),
    OpDecl("softmax", "softmax", ("rows", "cols"), {}, summary="torch.softmax over the last axis of (rows,cols)"),
    OpDecl(
        "unfused_attention", "unfused", ATTENTION_KEYS, {}, ("none", "causal"),
        summary="standard attention as the FlashAttention benchmarks run it: baddbmm(Q, K^T, alpha=scale) [+ additive"
        " mask] -> softmax -> bmm with V, scores materialised (GQA K/V expanded)",
    ),
    OpDecl(
        "sdpa", "sdpa", ATTENTION_KEYS, {"kv_heads": None}, ("none", "causal"), SDPA_BACKENDS,
        summary="torch.nn.functional.scaled_dot_product_attention under sdpa_kernel(backend)",
    ),
    OpDecl(
        "flex_attention", "flex", ATTENTION_KEYS, {"kv_heads": None, "window": None, "block": 128},
        ("causal", "sliding_window", "block_sparse", "none"), ("compiled",),
        summary="torch.compile(flex_attention) with a BlockMask (sliding_window needs window; block_sparse keeps"
        " the diagonal and half the other blocks of size block)",
    ),
    OpDecl(
        "decode", "decode", ("batch", "heads", "cache_len", "head_dim"), {"kv_heads": None}, ("none",),
        SDPA_BACKENDS[-1:] + SDPA_BACKENDS[:-1],
        summary="one decode step: write the new K/V into a preallocated cache, then SDPA of 1 query over cache_len+1",
    ),
    OpDecl("copy", "copy", ("nbytes",), {}, summary="dst.copy_(src) of nbytes (bytes moved: 2*nbytes)"),
    OpDecl(
        "broadcast_add", "elementwise", ("batch", "rows", "cols"), {},
        summary="x + m of x (batch,rows,cols) and m (rows,cols) broadcast over batch, as an additive attention mask"
        " is added to the scores (PyTorch runs broadcasting elementwise kernels on its non-vectorized path)",
    ),
    OpDecl("exp", "exp", ("elements",), {}, summary="torch.exp(x, out=y) over elements (streams through memory)"),
    OpDecl(
        "exp_chain", "exp", ("elements", "depth"), {}, ("none",), ("eager", "compiled"),
        summary="exp throughput: depth exps per element on cache-resident data (eager: depth torch.exp calls on"
        " one buffer; compiled: one torch.compile'd kernel computing y = exp(-y) depth times)",
    ),
)  # fmt: skip

OPS: Mapping[str, OpDecl] = MappingProxyType({op.name: op for op in _OPS})
"""Every measurable operation by name."""

ROLES: tuple[str, ...] = ("validation", "calibration")
"""What a row is for: calibration rows (microbenchmarks) fit a preset's efficiencies, validation rows judge it."""

CALIBRATION_OPS: tuple[str, ...] = ("matmul", "bmm", "copy", "exp_chain", "softmax", "broadcast_add")
"""Operations a calibration case may use (GEMM peak by shape, copy bandwidth, exp throughput, library softmax
and broadcasting elementwise bandwidth)."""


def op_decl(name: str) -> OpDecl:
    """The declaration of an operation; a miss lists the known names.

    >>> op_decl("sdpa").family
    'sdpa'
    """
    try:
        return OPS[name]
    except KeyError:
        raise RegistryError(f"unknown operation {name!r}; known: {', '.join(OPS)}") from None
