"""Every registered attention cascade as a GPU kernel: a fused tile program derived from the cascade itself.

**Fused one-pass cascades** (the softmax variants, sigmoid/softplus, linear attention; FlashAttention-2/-3
style, see :mod:`simulator.kernels.attention`). One CTA owns ``Br`` query rows of one query head and walks the
key tiles of ``Bc`` keys it must visit. What a tile costs is read off the variant's cascade, lowered at one
tile's sizes (B = 1, every head rank 1, P = Br, M = Bc with the outer parts of M set to 1, head dims at the
shape's), exactly as :func:`~simulator.kernels.attention.tile_ops` does for the dense cascade:

* an Einsum that iterates a key variable and a query variable runs **once per visited tile** (QK, the online
  softmax, P.V; the masked scores' ``select`` only on tiles that straddle a mask boundary: interior tiles drop
  it, as FlashAttention kernels do);
* one that iterates query variables only runs **once per CTA** (the final division; MLA's Q.W_K absorption and
  its W_V projection);
* one that iterates key variables only is **key-side work**, done once per (batch, head) in a first kernel
  before the main one (linear attention's state ``S += phi(K) V^T``, the up-projections of expanded MLA): its
  results that the main kernel reads are written to DRAM and read back, except elementwise maps of inputs
  (``phi(K)``), which the main kernel recomputes in its tiles instead;
* op kinds go to the units of :data:`~simulator.kernels.machine.UNIT_OF_OP` (``mac`` tensor cores, ``exp``,
  ``sigmoid``, ``softplus``, ``log`` SFU, the rest FP32 lanes). So sigmoid and softplus attention, having no
  max and no rescale, have cheaper tiles by construction, and MLA's tiles carry the latent dim.

Which key tiles a row block visits is the variant's mask semantics (:data:`MASKS`), as key intervals per query
row (bottom-right aligned when seq_q < seq_kv): ``full``, ``causal``, ``window`` (the last W keys), ``sinks``
(the first S keys and the last W), ``chunk`` (causal inside the query's own chunk; the chunk of causal linear
attention is the kernel's key tile, which the chunked algorithm allows), ``block`` / ``block-causal`` (a block
mask of density d over key blocks of the cascade's M0: ``ceil(d x blocks)`` blocks per row tile; with the causal
mask the diagonal blocks are always kept, as MoBA keeps the query's own block) and ``s2`` (head shard ``hn``
sees the key blocks ``k % N == hn`` plus its last ``local`` blocks, causally). A tile that no row of the block
sees is skipped, a tile every row sees in full is an interior tile, the rest pay the mask. DuoAttention's two
head kinds are two CTA populations (retrieval heads causal, streaming heads sinks + window); S2-Attention's
head shards are ``HN`` populations. K/V (and any key-indexed input) reach DRAM once per K/V head: the query
heads of a GQA group and the row blocks of a head re-read them through L2, as in the dense model; the CTA's
prologue and epilogue, the tile mapper (every Br x Bc that fits shared memory and registers, the fastest kept;
for block masks Bc must divide the mask's key block and Br its query block) and the CTA list-scheduling are
those of the dense model. FLOPs and exp counts are those of the unmasked pairs (per-pair work x unmasked
pairs) plus the per-CTA, per-tile and key-side work as executed.

**Decode** (``decode``, ``decode-splitk``): :func:`~simulator.kernels.attention.predict_decode` with the
split fixed to 1 (the unsplit FlashAttention-2 decode kernel) or to the cascade's S (Flash-Decoding).

**Multi-pass cascades** (``attention-3pass``, ``attention-2pass`` and their causal forms): the unfused chain
of :func:`~simulator.kernels.attention.predict_unfused` (QK^T GEMM, scores through DRAM, row softmax, P.V GEMM).
The 2-pass cascade's deferred division touches only the output (F x P), which the chain folds into its last
kernel, so both run the same chain.

Variant parameters default to the registry's: windows, sinks and S2's local blocks are the constants of
:mod:`workloads.variants`, splits, blocks and shards its size defaults at the given shape, latent dims and
DuoAttention's head mix its base sizes. The block density is not registered (block masks are inputs); it
defaults to :data:`BLOCK_DENSITY`.

>>> p = predict_variant("h100-sxm", "sliding-window", batch=1, heads=32, seq_q=16384, head_dim=128)
>>> p.kernel, p.tiles["key_tiles_visited"] < predict_variant(
...     "h100-sxm", "attention-1pass-causal", batch=1, heads=32, seq_q=16384, head_dim=128).tiles["key_tiles_visited"]
('fa3:sliding-window', True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from typing import Any

import numpy as np

import workloads
from einsum.cascade import Cascade
from einsum.errors import SpecError
from einsum.lower import LoweredCascade, lower
from simulator.device import DeviceSpec, load_device
from simulator.kernels.attention import (
    FlashTile,
    check_fused,
    flash_candidates,
    flash_tiles,
    predict_decode,
    predict_unfused,
    tile_cycles,
)
from simulator.kernels.machine import UNIT_OF_OP, KernelPrediction, Machine, finish, machine, need
from simulator.kernels.schedule import makespan_cycles
from workloads import variants as wv

__all__ = [
    "BLOCK_DENSITY",
    "MASKS",
    "PARAMS",
    "VariantCase",
    "mask_tiles",
    "predict_variant",
    "variant_case",
    "variant_names",
]

BLOCK_DENSITY = 0.25
"""Default fraction of key blocks a block-sparse row tile keeps (ours: the registered block-sparse cascades
take the block mask as an input and register no density; MoBA's 512-key blocks with top-3 at 8K keys is 0.19)."""

MASKS: Mapping[str, tuple[str, ...]] = {
    "attention-1pass": ("full",),
    "attention-1pass-causal": ("causal",),
    "fusemax": ("full",),
    "fusemax-causal": ("causal",),
    "gqa": ("full",),
    "mqa": ("full",),
    "mla": ("full",),
    "mla-expanded": ("full",),
    "sliding-window": ("window",),
    "streaming-llm": ("sinks",),
    "duo-attention": ("causal", "sinks"),
    "block-sparse": ("block",),
    "moba": ("block-causal",),
    "s2-attention": ("s2",),
    "linear-attention": ("full",),
    "linear-attention-causal": ("chunk",),
    "sigmoid-attention": ("full",),
    "softplus-attention": ("full",),
}
"""Fused cascades -> the mask kind of each CTA population (DuoAttention: retrieval heads, then streaming heads),
as the cascades' ``where`` conditions and block-mask inputs state them (module docstring)."""

DECODE = ("decode", "decode-splitk")
UNFUSED = ("attention-3pass", "attention-3pass-causal", "attention-2pass", "attention-2pass-causal")

PARAMS: Mapping[str, tuple[str, ...]] = {
    "sliding-window": ("window",),
    "streaming-llm": ("sinks", "window"),
    "duo-attention": ("sinks", "window", "retrieval_fraction"),
    "block-sparse": ("density", "block"),
    "moba": ("density", "block"),
    "s2-attention": ("local_blocks", "shards", "block"),
    "decode-splitk": ("splits",),
    "mla": ("latent", "rope"),
    "mla-expanded": ("latent", "rope"),
}
"""Variant -> the parameters it takes: ``window``, ``sinks`` (tokens), ``retrieval_fraction`` (DuoAttention's
share of full-attention heads), ``density`` (kept fraction of key blocks), ``block`` (key block, tokens),
``local_blocks`` and ``shards`` (S2-Attention's local blocks and strided shards N), ``splits`` (split-K),
``latent`` and ``rope`` (MLA's latent rank L and decoupled-RoPE dim ER)."""

_HEAD_RANKS = ("H", "G", "R", "HS", "HG", "HN")
_KV_RANK = "G"  # cascades with a K/V-head rank take kv_heads


def variant_names() -> tuple[str, ...]:
    """The registered cascades that have a GPU kernel model, in registry order."""
    known = {*MASKS, *DECODE, *UNFUSED}
    return tuple(n for n in workloads.CASCADES if n in known)


# --------------------------------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class VariantCase:
    """One variant at one shape: the cascade's rank sizes and the completed parameters."""

    name: str
    batch: int
    heads: int  # query heads (all kinds together for DuoAttention)
    kv_heads: int  # K/V heads the cascade reads (1 for MQA and MLA's shared latent)
    seq_q: int
    seq_kv: int
    head_dim: int
    params: Mapping[str, float]
    sizes: Mapping[str, int] = field(repr=False)  # the cascade's rank sizes
    cascade: Cascade = field(repr=False)

    @property
    def causal(self) -> bool:
        return "causal" in self.name or self.name in ("decode", "decode-splitk")


def _check_int(name: str, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{what}: {name} must be a positive integer, got {value!r}")
    return value


def _defaults(name: str, given: Mapping[str, int]) -> dict[str, float]:
    """Registered parameter defaults of a variant (module docstring)."""
    entry = workloads.get_cascade(name)
    if name == "sliding-window":
        return {"window": wv.SLIDING_WINDOW}
    if name == "streaming-llm":
        return {"sinks": wv.STREAMING_SINKS, "window": wv.STREAMING_WINDOW}
    if name == "duo-attention":
        h, hs = entry.base_sizes["H"], entry.base_sizes["HS"]
        return {"sinks": wv.DUO_SINKS, "window": wv.DUO_WINDOW, "retrieval_fraction": h / (h + hs)}
    if name in ("mla", "mla-expanded"):
        return {"latent": entry.base_sizes["L"], "rope": entry.base_sizes["ER"]}
    sizes = entry.sizes(given)
    if name in ("block-sparse", "moba"):
        return {"density": BLOCK_DENSITY, "block": sizes["M0"]}
    if name == "s2-attention":
        return {"local_blocks": wv.S2_LOCAL_BLOCKS, "shards": sizes["N"], "block": sizes["M0"]}
    if name == "decode-splitk":
        return {"splits": sizes["S"]}
    return {}


_TEXT_PARAMS = ("window", "sinks", "local_blocks")  # the parameters written into a cascade's text


def _text_key(params: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, v) for k, v in params.items() if k in _TEXT_PARAMS))


@cache
def _built(name: str, key: tuple[tuple[str, float], ...]) -> Cascade:
    """The registered cascade, or its text rebuilt for windows, sinks and local blocks other than registered."""
    p = dict(key)
    builders = {
        "sliding-window": lambda: wv.sliding_window(int(p["window"])),
        "streaming-llm": lambda: wv.streaming_llm(int(p["sinks"]), int(p["window"])),
        "duo-attention": lambda: wv.duo_attention(int(p["sinks"]), int(p["window"])),
        "s2-attention": lambda: wv.s2_attention(int(p["local_blocks"])),
    }
    entry = workloads.get_cascade(name)
    if name not in builders:
        return entry.cascade
    text = builders[name]()
    if text == entry.text:
        return entry.cascade
    return Cascade.from_text(text, name=name, doc=entry.summary, origin=f"<cascade {name} {p}>")


def variant_case(
    name: str,
    *,
    batch: int,
    heads: int,
    seq_q: int,
    head_dim: int,
    seq_kv: int | None = None,
    kv_heads: int | None = None,
    params: Mapping[str, float] | None = None,
) -> VariantCase:
    """Validate a variant's shape and parameters and complete them from the registry (module docstring).

    ``seq_kv`` defaults to ``seq_q`` (prefill); decode variants take ``seq_q`` new queries (usually 1) against
    ``seq_kv`` cached keys. ``kv_heads`` is taken only by cascades with a K/V-head rank (gqa, decode,
    decode-splitk; default: the registry's group of up to 4 query heads per K/V head).
    """
    valid = variant_names()
    if name not in valid:
        raise SpecError(f"unknown attention variant {name!r}; variants with a GPU model: {', '.join(valid)}")
    what = f"variant {name}"
    for key, value in (("batch", batch), ("heads", heads), ("seq_q", seq_q), ("head_dim", head_dim)):
        _check_int(key, value, what)
    seq_kv = seq_q if seq_kv is None else _check_int("seq_kv", seq_kv, what)
    entry = workloads.get_cascade(name)
    ranks = entry.cascade.ranks
    if kv_heads is not None:
        _check_int("kv_heads", kv_heads, what)
        if _KV_RANK not in ranks and kv_heads != heads:
            raise SpecError(
                f"{what}: its cascade has no K/V-head rank, so kv_heads={kv_heads} cannot apply (its K/V heads "
                f"are fixed by the cascade); kv_heads applies to "
                f"{', '.join(n for n in valid if _KV_RANK in workloads.get_cascade(n).cascade.ranks)}"
            )
    given: dict[str, int] = {"B": batch, "M": seq_kv, "P": seq_q, "E": head_dim, "F": head_dim, "H": heads}
    if _KV_RANK in ranks and kv_heads is not None:
        given["G"] = kv_heads
    allowed = PARAMS.get(name, ())
    if params is not None and not isinstance(params, Mapping):
        raise SpecError(f"{what}: params must be a mapping of name to value, got {params!r}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise SpecError(
            f"{what}: unknown parameter(s) {', '.join(unknown)}; it takes "
            + (", ".join(allowed) if allowed else "none")
        )
    full = {**_defaults(name, given), **params}
    for key, value in full.items():
        if key == "retrieval_fraction" or key == "density":
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1):
                raise SpecError(f"{what}: {key} must be a number in (0, 1], got {value!r}")
        else:
            _check_int(key, value, what)
    if name == "duo-attention":
        need(heads >= 2, f"{what}: needs at least 2 heads (retrieval and streaming), got heads={heads}")
        retrieval = min(heads - 1, max(1, round(heads * full["retrieval_fraction"])))
        given.update(H=retrieval, HS=heads - retrieval)
    if name in ("mla", "mla-expanded"):
        given.update(L=int(full["latent"]), ER=int(full["rope"]))
    if name in ("block-sparse", "moba"):
        given["M0"] = int(full["block"])
    if name == "s2-attention":
        given.update(N=int(full["shards"]), M0=int(full["block"]))
        need(
            seq_kv % (given["N"] * given["M0"]) == 0,
            f"{what}: seq_kv {seq_kv} must be a multiple of shards x block = {given['N']} x {given['M0']}",
        )
    if name == "decode-splitk":
        given["S"] = int(full["splits"])
    if name in ("block-sparse", "moba"):
        need(seq_kv % given["M0"] == 0, f"{what}: seq_kv {seq_kv} must be a multiple of the key block {given['M0']}")
    cascade = _built(name, _text_key(full))
    sizes = entry.defaults(dict(given), cascade)
    sizes = cascade.rank_sizes(sizes)
    if _KV_RANK in ranks:
        kv = sizes["G"]
    elif name in ("mqa", "mla", "mla-expanded"):
        kv = 1  # MQA's one K/V head; MLA's latent shared by all heads
    else:
        kv = heads
    return VariantCase(name, batch, heads, kv, seq_q, seq_kv, head_dim, full, sizes, cascade)


# ------------------------------------------------------------------------------------- the tile program


@dataclass(frozen=True)
class _Program:
    """Per-unit ops of one variant's tile, CTA and key side, read off the cascade lowered at one tile."""

    pops: tuple[str, ...]  # CTA populations: "main", and "hs" (DuoAttention's streaming heads)
    tile: Mapping[str, dict[str, float]]  # pop -> unit -> ops per visited tile (mask selects included)
    selects: Mapping[str, float]  # pop -> select ops per tile (dropped on interior tiles)
    pair: Mapping[str, dict[str, float]]  # pop -> unit -> ops per unmasked query-key pair
    tile_only: Mapping[str, dict[str, float]]  # pop -> unit -> per-tile ops of Einsums without the inner key var
    cta: Mapping[str, dict[str, float]]  # pop -> unit -> ops per CTA
    kv_tile_words: Mapping[str, float]  # pop -> key-indexed words streamed per tile
    q_tile_words: Mapping[str, float]  # pop -> query-indexed words re-read per tile
    o_tile_words: Mapping[str, float]  # pop -> output words per CTA
    key_ops: dict[str, float]  # unit -> key-side ops per key tile, summed over its Einsums' heads (x B)
    key_einsums: tuple[str, ...]
    materialized: tuple[tuple[str, float, bool], ...]  # (tensor, words per key tile per head-unit, per tile)
    main_inputs: frozenset[str]
    key_inputs: frozenset[str]


def _units(ops: Mapping[str, int], scale: float = 1.0) -> dict[str, float]:
    out = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0}
    for kind, count in ops.items():
        unit = UNIT_OF_OP.get(kind, "fma")
        out[unit] += (2.0 if unit == "tensor" else 1.0) * count * scale
    return out


def _add(a: dict[str, float], b: Mapping[str, float]) -> None:
    for k, v in b.items():
        a[k] = a.get(k, 0.0) + v


def _parts(cascade: Cascade, rank: str) -> list[str]:
    out, todo = [], [rank]
    while todo:
        r = todo.pop()
        for p in cascade.partitions.get(r, ()):
            out.append(p)
            todo.append(p)
    return out


def _tile_sizes(cascade: Cascade, sizes: Mapping[str, int], br: int, bc: int) -> dict[str, int]:
    tile = {r: sizes[r] for r in cascade.ranks if r in ("E", "F", "L", "ER")}
    tile.update({r: 1 for r in cascade.ranks if r in ("B", *_HEAD_RANKS)})
    for rank, size in (("M", bc), ("P", br)):
        tile[rank] = size
        parts = cascade.partitions.get(rank, ())
        tile.update({p: 1 for p in parts[:-1]})
    for rank, parts in cascade.partitions.items():  # nested partitions (none registered): outer parts 1
        if rank not in ("M", "P", "H"):
            tile.update({p: 1 for p in parts[:-1]})
    return tile


@lru_cache(maxsize=1024)
def _program(name: str, text_key: tuple, dims: tuple, br: int, bc: int) -> _Program:
    cascade = _built(name, text_key)
    low = lower(cascade, _tile_sizes(cascade, dict(dims), br, bc))
    key_vars = {"m", *(p.lower() for p in _parts(cascade, "M"))}
    query_vars = {"p", *(p.lower() for p in _parts(cascade, "P"))}
    m_parts = cascade.partitions.get("M", ())
    inner = m_parts[-1].lower() if m_parts else "m"

    def kind(e) -> str:
        vs = set(e.vars)
        if vs & key_vars and vs & query_vars:
            return "tile"
        return "key" if vs & key_vars else "cta"

    kinds = {e.name: kind(e) for e in low.einsums}
    key_side = [e for e in low.einsums if kinds[e.name] == "key"]
    recomputed = {
        e.name
        for e in key_side
        if bool(e.incidence[0].all())
        and "mac" not in e.ops_per_point
        and all(t in low.inputs for t in e.inputs)
        and any(kinds[c] != "key" for c in low.consumers.get(e.name, ()))
    }
    pops = ("main", "hs") if any("hs" in e.vars for e in low.einsums) else ("main",)

    def pop_of(e) -> str:
        return "hs" if "hs" in e.vars else "main"

    tile, pair, tile_only, cta = ({p: {} for p in pops} for _ in range(4))
    selects, kv_words, q_words, o_words = ({p: 0.0 for p in pops} for _ in range(4))
    streamed: dict[str, set[str]] = {p: set() for p in pops}
    q_read: dict[str, set[str]] = {p: set() for p in pops}
    main_inputs: set[str] = set()
    for e in low.einsums:
        k = kinds[e.name]
        if k == "key" and e.name not in recomputed:
            continue
        p = pop_of(e)
        main_inputs.update(t for t in e.inputs if t in low.inputs)
        if k == "cta":
            _add(cta[p], _units(e.ops()))
            continue
        # a per-tile Einsum, or an elementwise key-side map recomputed in the tiles
        _add(tile[p], _units(e.ops()))
        selects[p] += float(e.ops().get("select", 0))
        no_select = {kk: v for kk, v in e.ops().items() if kk != "select"}
        if k == "tile" and inner in e.vars and set(e.vars) & query_vars:
            _add(pair[p], _units(no_select, 1.0 / (br * bc)))
        else:
            _add(tile_only[p], _units(no_select))
        for ti, t in enumerate(e.tensors[1:], start=1):
            keyed = any(e.incidence[ti, j] for j, v in enumerate(e.vars) if v in key_vars)
            queried = any(e.incidence[ti, j] for j, v in enumerate(e.vars) if v in query_vars)
            from_cta = t in low.producer and kinds.get(low.producer[t]) == "cta"
            from_key = t in low.producer and kinds[low.producer[t]] == "key" and t not in recomputed
            if keyed and (t in low.inputs or from_key):
                streamed[p].add(t)
            elif queried and (t in low.inputs or from_cta):
                q_read[p].add(t)
    materialized = []
    for e in key_side:
        readers = [c for c in low.consumers.get(e.name, ()) if kinds[c] != "key"]
        if e.name in recomputed or not readers:
            continue
        per_tile = any(kinds[c] == "tile" for c in readers)
        out_words = float(np.prod([e.var_sizes[j] for j in range(len(e.vars)) if e.incidence[0, j]]))
        materialized.append((e.name, out_words, per_tile))
    words = dict(low.tensor_words)
    for p in pops:
        kv_words[p] = sum(
            words[t] if t in low.inputs else next(w for n, w, _ in materialized if n == t) for t in streamed[p]
        )
        q_words[p] = sum(words[t] for t in q_read[p])
    for o in low.outputs:
        o_words[pop_of(low.einsum(o))] += words[o]
    key_ops: dict[str, float] = {}
    for e in key_side:
        _add(key_ops, _units(e.ops()))
    key_inputs = frozenset(t for e in key_side for t in e.inputs if t in low.inputs)
    return _Program(
        pops, tile, selects, pair, tile_only, cta, kv_words, q_words, o_words, key_ops,
        tuple(e.name for e in key_side), tuple(materialized), frozenset(main_inputs), key_inputs,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- masks -> tiles


@dataclass(frozen=True)
class TileCounts:
    """Per row block of one CTA population: key tiles visited and those straddling a mask boundary."""

    heads: int  # query heads in the population
    visited: np.ndarray  # int64[row blocks]
    boundary: np.ndarray  # int64[row blocks]
    pairs: float  # unmasked query-key pairs per head


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-a // b)


def _tile_range(lo: np.ndarray, hi: np.ndarray, bc: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiles touching [lo, hi) as a half-open range of tile indices (empty where hi <= lo)."""
    a, b = lo // bc, _ceil_div(hi, bc)
    return a, np.where(hi > lo, b, a)


def _full_range(lo: np.ndarray, hi: np.ndarray, bc: int, skv: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiles inside [lo, hi) (the last, short tile counts when hi reaches seq_kv)."""
    a = _ceil_div(lo, bc)
    b = np.where(hi >= skv, _ceil_div(np.full_like(hi, skv), bc), hi // bc)
    return a, np.maximum(np.where(hi > lo, b, a), a)


def _union_count(r1: tuple, r2: tuple | None) -> np.ndarray:
    n = r1[1] - r1[0]
    if r2 is None:
        return n
    overlap = np.maximum(0, np.minimum(r1[1], r2[1]) - np.maximum(r1[0], r2[0]))
    return n + (r2[1] - r2[0]) - overlap


def _intervals(kind: str, p: Mapping[str, float], pos: np.ndarray, skv: int, bc: int) -> list[tuple]:
    """Key intervals [lo, hi) each query position sees (lo and hi non-decreasing in the position)."""
    hi = np.minimum(pos + 1, skv)
    zero = np.zeros_like(pos)
    if kind == "full":
        return [(zero, np.full_like(pos, skv))]
    if kind == "causal":
        return [(zero, hi)]
    if kind == "chunk":
        return [((pos // bc) * bc, hi)]
    window = [(np.maximum(0, pos - int(p["window"]) + 1), hi)]
    if kind == "window":
        return window
    return [(zero, np.minimum(int(p["sinks"]), hi)), *window]  # sinks


def _interval_counts(kind: str, p: Mapping[str, float], sq: int, skv: int, br: int, bc: int) -> tuple:
    """(visited, boundary) tiles per row block for an interval mask."""
    off = skv - sq
    first = np.arange(0, sq, br, dtype=np.int64)
    last = np.minimum(first + br, sq) - 1
    lo_f, lo_l = _intervals(kind, p, first + off, skv, bc), _intervals(kind, p, last + off, skv, bc)
    visit = [_tile_range(a[0], b[1], bc) for a, b in zip(lo_f, lo_l, strict=True)]  # union over the rows
    full = [_full_range(b[0], a[1], bc, skv) for a, b in zip(lo_f, lo_l, strict=True)]  # seen by every row
    visited = _union_count(visit[0], visit[1] if len(visit) > 1 else None)
    n_full = _union_count(full[0], full[1] if len(full) > 1 else None)
    return visited, np.maximum(visited - n_full, 0)


@lru_cache(maxsize=512)
def _pairs(kind: str, key: tuple, sq: int, skv: int, br: int, bc: int, shards: int) -> tuple[float, ...]:
    """Unmasked query-key pairs per head of each sub-population, exact over the query rows (cached: they do not
    depend on the tile, except the chunk of ``chunk`` and the row tile that selects ``block-causal`` blocks)."""
    p = dict(key)
    pos = np.arange(sq, dtype=np.int64) + (skv - sq)
    if kind in ("full", "causal", "window", "sinks", "chunk"):
        rows = _intervals(kind, p, pos, skv, bc)
        pairs = (rows[0][1] - rows[0][0]).astype(np.float64)
        if len(rows) > 1:
            overlap = np.maximum(0, np.minimum(rows[0][1], rows[1][1]) - np.maximum(rows[0][0], rows[1][0]))
            pairs = pairs + (rows[1][1] - rows[1][0]) - overlap
        return (float(pairs.sum()),)
    kb = int(p["block"])
    if kind == "block":
        n_blocks = -(-skv // kb)
        return (float(sq) * min(n_blocks, max(1, math.ceil(p["density"] * n_blocks))) * kb,)
    if kind == "block-causal":
        start = ((pos - (skv - sq)) // br * br + (skv - sq)) // kb * kb  # each row's diagonal key blocks
        return (float((pos + 1 - start + np.ceil(p["density"] * (start // kb)) * kb).sum()),)
    n, local = int(p["shards"]), int(p["local_blocks"])
    row_local = np.maximum(0, pos // kb - local + 1)
    out = []
    for hn in range(shards):
        strided = np.where(row_local > hn, (row_local - hn - 1) // n + 1, 0)
        out.append(float((pos + 1 - row_local * kb + strided * kb).sum()))
    return tuple(out)


def mask_tiles(
    kind: str,
    params: Mapping[str, float],
    *,
    seq_q: int,
    seq_kv: int,
    br: int,
    bc: int,
    heads: int,
    head_shards: int = 1,
) -> list[TileCounts]:
    """Key tiles each row block visits under a mask kind (module docstring), per CTA sub-population.

    ``params``: ``window``, ``sinks``, ``block``, ``density``, ``shards``, ``local_blocks`` as the kind needs;
    ``head_shards``: S2-Attention's HN (one sub-population per shard, ``heads / head_shards`` heads each).
    """
    sq, skv = seq_q, seq_kv
    pairs = _pairs(kind, tuple(sorted(params.items())), sq, skv, br if kind == "block-causal" else 0,
                   bc if kind == "chunk" else 0, head_shards if kind == "s2" else 1)  # fmt: skip
    if kind in ("full", "causal", "window", "sinks", "chunk"):
        visited, boundary = _interval_counts(kind, params, sq, skv, br, bc)
        return [TileCounts(heads, visited, boundary, pairs[0])]
    off = skv - sq
    first = np.arange(0, sq, br, dtype=np.int64) + off
    last = np.minimum(first - off + br, sq) - 1 + off
    kb = int(params["block"])
    per = kb // bc
    if kind == "block":
        n_blocks = -(-skv // kb)
        keep = min(n_blocks, max(1, math.ceil(params["density"] * n_blocks)))
        visited = np.full(first.shape, keep * per, dtype=np.int64)
        return [TileCounts(heads, visited, np.zeros_like(visited), pairs[0])]
    _, diagonal = _interval_counts("causal", params, sq, skv, br, bc)
    if kind == "block-causal":
        start = (first // kb) * kb  # the diagonal key blocks (always kept) begin here
        keep = np.ceil(params["density"] * (start // kb)).astype(np.int64)
        visited = keep * per + _ceil_div(last + 1, bc) - start // bc
        return [TileCounts(heads, visited, np.minimum(diagonal, visited), pairs[0])]
    # s2: head shard hn sees key blocks k % N == hn below its local window, and its last `local` blocks
    n, local = int(params["shards"]), int(params["local_blocks"])
    blk_local = np.maximum(0, first // kb - local + 1)
    out = []
    for hn in range(head_shards):
        strided = np.where(blk_local > hn, (blk_local - hn - 1) // n + 1, 0)
        visited = _ceil_div(last + 1, bc) - blk_local * per + strided * per
        out.append(TileCounts(heads // head_shards, visited, np.minimum(diagonal, visited), pairs[hn]))
    return out


# ------------------------------------------------------------------------------------------------ the kernel


def _program_of(case: VariantCase, t: FlashTile) -> _Program:
    dims = tuple((r, case.sizes[r]) for r in ("E", "F", "L", "ER") if r in case.sizes)
    return _program(case.name, _text_key(case.params), dims, t.br, t.bc)


def _tile_dim(case: VariantCase) -> int:
    """Head width that sizes the tiles in shared memory and registers (MLA: the latent plus the RoPE dim)."""
    s = case.sizes
    if case.name == "mla":
        return s["L"] + s["ER"]
    return max(s["E"], s["F"]) + s.get("ER", 0)


def _population_counts(case: VariantCase, pops: tuple[str, ...], br: int, bc: int) -> dict[str, list[TileCounts]]:
    s = case.sizes
    kinds = MASKS[case.name]
    heads = {"main": s.get("H", case.heads) if "HS" in s else case.heads, "hs": s.get("HS", 0)}
    return {
        pop: mask_tiles(kind, case.params, seq_q=case.seq_q, seq_kv=case.seq_kv, br=br, bc=bc, heads=heads[pop],
                        head_shards=s.get("HN", 1))
        for pop, kind in zip(pops, kinds, strict=True)
    }  # fmt: skip


def _head_units(case: VariantCase, e_vars: tuple[str, ...]) -> int:
    return math.prod(case.sizes[v.upper()] for v in e_vars if v.upper() in ("B", *_HEAD_RANKS))


def _key_side(m: Machine, prog: _Program, case: VariantCase, whole: LoweredCascade, words, bc: int) -> dict:
    """The key-side kernel: its time (calibrated rates, overlapped with its DRAM traffic), ops and bytes."""
    e, clock_sms = m.elem_bytes, m.clock_hz * m.sms
    units = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0}
    if not prog.key_einsums:
        return {"s": 0.0, "bytes": 0.0, "materialized": 0.0, **units}
    for name in prog.key_einsums:
        _add(units, _units(whole.einsum(name).ops()))
    n_key_tiles = -(-case.seq_kv // bc)
    materialized = sum(
        w * _head_units(case, whole.einsum(name).vars) * (n_key_tiles if per_tile else 1) * e
        for name, w, per_tile in prog.materialized
    )
    nbytes = sum(words[t] for t in prog.key_inputs) * e + materialized
    seconds = m.latency_s + max(
        units["tensor"] / (m.tensor_rate * clock_sms),
        units["sfu"] / (m.sfu_rate * clock_sms),
        units["fma"] / (m.fma_rate * clock_sms),
        nbytes / m.dram_bytes_per_s,
    )
    return {"s": seconds, "bytes": nbytes, "materialized": materialized, **units}


def _fused_one(
    m: Machine, flavour: str, t: FlashTile, case: VariantCase, whole: LoweredCascade, words, best_s: float
) -> dict | None:
    """One tile candidate; None when a lower bound shows it cannot beat ``best_s``."""
    prog = _program_of(case, t)
    e = m.elem_bytes
    counts = _population_counts(case, prog.pops, t.br, t.bc)
    groups, visited_total, flops, exp_ops, work = [], 0, 0.0, 0.0, 0.0
    heaviest: tuple[float, dict] = (-1.0, {})
    for pop in prog.pops:
        ops = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0, **prog.tile[pop]}
        interior = {**ops, "fma": ops["fma"] - prog.selects[pop]}
        kv_b, q_b = prog.kv_tile_words[pop] * e, prog.q_tile_words[pop] * e
        plain, parts = tile_cycles(m, flavour, t, interior, kv_tile_bytes=kv_b, q_tile_bytes=q_b)
        masked, _ = tile_cycles(m, flavour, t, ops, kv_tile_bytes=kv_b, q_tile_bytes=q_b)
        cta_ops = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0, **prog.cta[pop]}
        epilogue = cta_ops["tensor"] / m.tensor_rate + cta_ops["sfu"] / m.sfu_rate + cta_ops["fma"] / m.fma_rate
        fixed = m.latency_s * m.clock_hz + (q_b + kv_b + prog.o_tile_words[pop] * e) / m.l2_share_bytes_per_clock
        pair = {"tensor": 0.0, "sfu": 0.0, **prog.pair[pop]}
        only = {"tensor": 0.0, "sfu": 0.0, **prog.tile_only[pop]}
        for c in counts[pop]:
            if not prog.tile[pop]:  # no per-tile Einsums (non-causal linear attention): no key tiles to walk
                c = replace(c, visited=np.zeros_like(c.visited), boundary=np.zeros_like(c.boundary), pairs=0.0)
            cta = (c.visited - c.boundary) * plain + c.boundary * masked + epilogue + fixed / t.per_sm
            reps = case.batch * c.heads
            groups.append((cta, reps))
            n_vis = int(c.visited.sum()) * reps
            visited_total += n_vis
            n_cta = c.visited.size * reps
            flops += pair["tensor"] * c.pairs * reps + only["tensor"] * n_vis + cta_ops["tensor"] * n_cta
            exp_ops += pair["sfu"] * c.pairs * reps + only["sfu"] * n_vis + cta_ops["sfu"] * n_cta
            group_work = float(cta.sum()) * reps
            work += group_work
            if group_work > heaviest[0]:
                share = dict(parts) if n_vis else {"tensor": cta_ops["tensor"] / m.tensor_rate,
                                                   "sfu": cta_ops["sfu"] / m.sfu_rate,
                                                   "fma": cta_ops["fma"] / m.fma_rate, "l2": 0.0}  # fmt: skip
                heaviest = (group_work, share)
    key = _key_side(m, prog, case, whole, words, t.bc)
    main_bytes = (sum(words[x] for x in prog.main_inputs) + sum(words[o] for o in case.cascade.outputs)) * e
    main_bytes += key["materialized"]
    memory_s = main_bytes / m.dram_bytes_per_s + key["s"]
    if max(work / m.sms / m.clock_hz + key["s"], memory_s) >= best_s:  # the makespan is at least work / SMs
        return None
    cta_cycles = np.concatenate([np.tile(cta, reps) for cta, reps in groups])  # row blocks fastest, then heads
    if flavour == "fa3":
        cta_cycles = np.sort(cta_cycles)[::-1]
    compute_s = makespan_cycles(cta_cycles, m.sms, t.per_sm) / m.clock_hz
    share = heaviest[1]
    if flavour == "fa3" and "smem" in share:  # the exp of a tile sits between its two matmuls: T + S
        unit = "sfu" if share["sfu"] > share["tensor"] else "tensor"
        share = {unit: share["tensor"] + share["sfu"], "fma": share["fma"], "smem": share["smem"], "l2": share["l2"]}
    core = {k: v for k, v in share.items() if k != "l2"}
    bound = "l2" if share.get("l2", 0.0) >= max(core.values()) else max(core, key=core.__getitem__)
    times = {bound: compute_s + key["s"], "memory": memory_s}
    tiles = flash_tiles(m, t, int(cta_cycles.size), visited_total, heaviest[1]) | {"key_side_s": key["s"]}
    return {
        "time": max(times.values()),
        "times": times,
        "tiles": tiles,
        "dram": main_bytes + key["bytes"],
        "flops": flops + key["tensor"],
        "exp_ops": exp_ops + key["sfu"],
        "key_side": bool(prog.key_einsums),
    }


def _candidates(m: Machine, flavour: str, case: VariantCase) -> list[FlashTile]:
    tiles = flash_candidates(m, flavour, _tile_dim(case))
    if case.name in ("block-sparse", "moba", "s2-attention"):
        kb = int(case.params["block"])
        qb = case.sizes.get("P0", kb)
        tiles = [t for t in tiles if kb % t.bc == 0 and (case.name == "s2-attention" or qb % t.br == 0)]
    return tiles


def predict_fused(m: Machine, flavour: str, case: VariantCase) -> KernelPrediction:
    """A one-pass variant as a fused FlashAttention-style kernel (module docstring)."""
    check_fused(m, flavour, case.head_dim)
    candidates = _candidates(m, flavour, case)
    need(
        bool(candidates),
        f"{flavour}:{case.name}: no Br x Bc tile fits: head width {_tile_dim(case)} in {m.spec.id}'s shared memory "
        f"({m.spec.smem_bytes_per_sm:.0f} bytes per SM, smem_bytes_per_sm) and register file "
        f"({m.spec.regs_bytes_per_sm:.0f} bytes per SM, regs_bytes_per_sm) for dtype {m.dtype}"
        + (f", with Bc dividing the key block {case.params['block']:g}" if "block" in case.params else ""),
    )
    whole = lower(case.cascade, case.sizes)
    words = dict(whole.tensor_words)
    best = None
    for t in candidates:
        r = _fused_one(m, flavour, t, case, whole, words, best["time"] if best else math.inf)
        if r is not None and (best is None or r["time"] < best["time"]):
            best = r
    compulsory = sum(words[t] for t in (*case.cascade.inputs, *case.cascade.outputs)) * m.elem_bytes
    notes = (
        f"variant {case.name}: masks {', '.join(MASKS[case.name])}",
        *(f"{k} = {v:g}" for k, v in sorted(case.params.items())),
    )
    return finish(m, op="sdpa", kernel=f"{flavour}:{case.name}", flops=best["flops"], hbm_bytes=best["dram"],
                  times=best["times"], tiles=best["tiles"], compulsory_bytes=compulsory, exp_ops=best["exp_ops"],
                  launches=2 if best["key_side"] else 1, notes=notes)  # fmt: skip


def predict_variant(
    device: str | DeviceSpec,
    name: str,
    *,
    dtype: str = "bf16",
    kernel: str | None = None,
    batch: int,
    heads: int,
    seq_q: int,
    head_dim: int,
    seq_kv: int | None = None,
    kv_heads: int | None = None,
    params: Mapping[str, float] | None = None,
) -> KernelPrediction:
    """Predict one registered attention variant on a GPU (module docstring).

    ``kernel``: ``fa2`` or ``fa3`` for the fused variants (default fa3 on Hopper, else fa2); decode and
    multi-pass cascades run their own kernels (``decode``, ``unfused``).
    """
    spec = load_device(device)
    case = variant_case(name, batch=batch, heads=heads, seq_q=seq_q, head_dim=head_dim, seq_kv=seq_kv,
                        kv_heads=kv_heads, params=params)  # fmt: skip
    if name in DECODE or name in UNFUSED:
        own = "decode" if name in DECODE else "unfused"
        if kernel not in (None, own):
            raise SpecError(f"variant {name}: runs kernel {own!r}, not {kernel!r}")
        m = machine(spec, dtype)
        s = {"batch": batch, "heads": heads, "kv_heads": case.kv_heads, "seq_q": seq_q, "seq_kv": case.seq_kv,
             "head_dim": head_dim, "causal": case.causal, "window": None}  # fmt: skip
        if own == "decode":
            pred = predict_decode(m, s, splits=(int(case.params.get("splits", 1)),))
        else:
            pred = predict_unfused(m, "unfused", s)
        return replace(pred, kernel=f"{own}:{name}", notes=(*pred.notes, f"variant {name}"))
    flavour = kernel or ("fa3" if spec.tensor_instruction == "wgmma" else "fa2")
    if flavour not in ("fa2", "fa3"):
        raise SpecError(f"variant {name}: fused kernels are fa2 or fa3, got {flavour!r}")
    return predict_fused(machine(spec, dtype, legacy_mma=flavour == "fa2"), flavour, case)


def predict_case(
    device: str | DeviceSpec, case: Any, *, dtype: str = "bf16", kernel: str | None = None
) -> KernelPrediction:
    """Predict a :class:`workloads.cases.Case` on a GPU (an adapter over :func:`predict_variant` for now)."""
    if case.name not in variant_names():
        raise SpecError(f"{case.name}: no GPU kernel model for this cascade yet")
    allowed = PARAMS.get(case.name, ())
    params = {k: v for k, v in case.params.items() if k in allowed}
    for word, rank in (("block", "M0"), ("splits", "S"), ("shards", "N"), ("latent", "L"), ("rope", "ER")):
        if word in allowed and rank in case.sizes:
            params[word] = case.sizes[rank]
    if "retrieval_fraction" in allowed:
        params["retrieval_fraction"] = case.sizes["H"] / case.heads
    args = {"batch": case.batch, "heads": case.heads, "seq_q": case.seq_q, "seq_kv": case.seq_kv,
            "head_dim": case.head_dim}  # fmt: skip
    if "G" in case.cascade.ranks:
        args["kv_heads"] = case.kv_heads
    return predict_variant(device, case.name, dtype=dtype, kernel=kernel, params=params, **args)
