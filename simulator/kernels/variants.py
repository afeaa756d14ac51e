"""Any attention cascade as a GPU kernel, read off the cascade itself: nothing here knows a cascade by name.

A :class:`workloads.cases.Case` (a cascade at complete sizes, with its mask densities) is costed by
:func:`predict_case`. Which kernel runs it, and what each of its tiles does, comes from the cascade's
structure: its key rank (:func:`einsum.analysis.key_ranks`: the iterative rank of its recurrences and the
rank that rank partitions, else the rank it reduces computed values over), its partitions, its lowering, its
``where`` conditions (:mod:`einsum.regions`) and its declared densities.

**Which kernel.**

* A part of the key partition before the tile part (the splits ``S`` of ``M = S * M1 * M0``), whose partials
  Einsums after the loop combine: **split-K decode**, with the split fixed by the cascade (``S``).
* Several passes over the key rank (:func:`einsum.analysis.pass_analysis`) and no split: the **unfused chain**.
* One pass, and few query rows per K/V head against a long cache (at most
  :data:`~simulator.kernels.attention.DECODE_QUERIES` rows, at least
  :data:`~simulator.kernels.attention.DECODE_KEYS` keys): the **decode** kernel, unsplit.
* Otherwise the **fused one-pass** kernel.

``kernel`` forces ``fa2``/``fa3`` (the fused kernel, for any one-pass cascade), ``decode`` or ``unfused``
where the cascade's structure allows them.

**Fused one-pass** (FlashAttention-2/-3 style, :mod:`simulator.kernels.attention` for the per-tile cycles).
The query variables are the outputs' free variables that index no input read at in-tile key positions
(``p``; ``r, p`` of GQA; ``h, p`` of MQA and MLA); the largest of their ranks is the **row rank** (``P``):
one CTA owns ``Br`` consecutive rows of it and walks the key tiles of ``Bc`` keys it must visit. Einsums are
classified by their variables, on the cascade lowered at one tile's sizes (grid ranks 1, the row rank ``Br``,
the key rank ``Bc`` with its outer parts 1, feature ranks at the case's sizes):

* an Einsum that iterates a key variable and a row variable runs **once per visited tile** (QK, the online
  softmax, P.V; a mask's ``select`` only on tiles that straddle the mask's boundary: an **interior** tile,
  where the Einsum's work region holds at every point, drops it, as FlashAttention kernels do);
* one that iterates row variables but no key variable runs **once per CTA** (the final division; MLA's
  Q.W_K absorption and W_V projection);
* one that iterates key variables only is **key-side work**, run once per (batch, head) in a first kernel
  before the main one (linear attention's state ``S += phi(K) V^T``, expanded MLA's up-projections): its
  results the main kernel reads are written to DRAM and read back, except elementwise maps of inputs
  (``phi(K)``), which the main kernel recomputes in its tiles;
* op kinds go to the units of :data:`~simulator.kernels.machine.UNIT_OF_OP` (``mac`` tensor cores, ``exp``,
  ``log``, ``sigmoid``, ``softplus`` SFU, the rest FP32 lanes).

**CTA populations.** The main kernel's Einsums fall into groups connected by the tensors they pass (the
retrieval and the streaming heads of DuoAttention are two); each group is a population of CTAs, one per row
block and per value of its **grid variables** (those every one of its tile Einsums iterates, other than key
and row variables: ``b, h``; ``b, g, r``; ``b, hg, hn``).

**Which tiles a row block visits** is the group's work region (:func:`einsum.regions.work_regions`, the
union over its tile Einsums), counted by :func:`einsum.regions.count_tiles`: a tile no point of the (row block
x key tile) box may see is skipped; one where the regions of the group's masking Einsums hold everywhere is
interior. Where the region reads the key (or row) position only as a whole (``m1*M0 + m0``) the kernel
chooses ``Bc`` freely (the cascade's ``M0`` is then only its tile size, re-bound to ``Bc``; a short last tile
when ``Bc`` does not divide ``M``); where it reads a part on its own (a block index, a head's shard, a chunk)
or a block mask indexes a part, ``Bc`` must divide the innermost part (and ``Br`` the row rank's): the
tile then lies in one block. A grid variable the region reads (S2-Attention's head shard ``hn``) splits the
population by its values. **Block masks** (inputs with a declared or given density ``d``): each element of
the mask is taken to be nonzero with probability ``d``, independently of the static conditions and of the
other elements (the semantics of :func:`einsum.analysis.effective_points` and of the spatial mapper): a tile
whose box covers ``k`` elements of the mask is visited with probability ``1 - (1 - d)^k``, and the visited
and interior tiles of the groups that read the mask are their expectations.

**Costs.** A CTA's cycles are its interior tiles at the unmasked tile cycles, its other visited tiles at the
masked ones, its epilogue (per-CTA Einsums) and its exposed prologue; CTAs are list-scheduled over the SMs
(fa3 longest first). Every input reaches DRAM once (K/V once per K/V head: the query heads of a group and
the row blocks re-read it through L2), every output is written once, plus the key-side results the main
kernel reads. The tile mapper tries every ``Br x Bc`` of :func:`~simulator.kernels.attention.flash_candidates`
that fits (the tile width is the words per key of the operands a tile reads: the larger of the score side's
and the value side's) and keeps the fastest. FLOPs and SFU counts are the useful work: the effective
operations (:func:`einsum.analysis.effective_op_counts`) of the Einsums that iterate an in-tile key and a
row variable, plus the per-tile, per-CTA and key-side work as executed.

**Decode** (:func:`~simulator.kernels.attention.decode_kernel`): the query variables' rows of one K/V group
packed into one tile, the keys each row visits (the longest, from the mask geometry), K/V words from the
inputs read at key positions, the split fixed by the cascade (1 without a split rank).

**Unfused chain** (multi-pass cascades, as PyTorch eager runs them): every contraction (an Einsum of ``mac``
ops) is a batched GEMM (:func:`~simulator.kernels.gemm.predict_gemm`: its first operand's own free variables
are the rows, the second's the columns, the shared ones the batch); an Einsum that masks by an index
condition is a broadcasting elementwise kernel (the mask plane over the condition's variables, added to the
scores); the other Einsums between two GEMMs are one softmax-like streaming kernel
(:func:`~simulator.kernels.elementwise.predict_rowwise`) that reads what it takes from outside and writes
what others read; a map after the last GEMM over its output's space is its epilogue. Every intermediate that
a kernel hands to another goes through DRAM.

>>> from workloads.cases import make_case
>>> window = make_case("sliding-window", {"B": 1, "H": 32, "E": 128, "F": 128, "M": 16384}, params={"W": 2048})
>>> causal = make_case("attention-1pass-causal", {"B": 1, "H": 32, "E": 128, "F": 128, "M": 16384})
>>> p, q = predict_case("h100-sxm", window), predict_case("h100-sxm", causal)
>>> p.kernel, p.tiles["key_tiles_visited"] < q.tiles["key_tiles_visited"] / 3
('fa3:sliding-window', True)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from einsum.analysis import effective_points, key_ranks, pass_analysis
from einsum.ast import Call, Neg, Number, index_vars, walk
from einsum.cascade import Cascade
from einsum.errors import SpecError
from einsum.lower import LoweredCascade, lower
from einsum.regions import (
    Formula,
    affine_forms,
    all_of,
    any_of,
    assign,
    comparisons,
    count_tiles,
    evaluate,
    positions,
    work_regions,
)
from simulator.device import DTYPE_BYTES, DeviceSpec, load_device
from simulator.kernels.attention import (
    DECODE_KEYS,
    DECODE_QUERIES,
    FlashTile,
    check_fused,
    decode_kernel,
    flash_candidates,
    flash_tiles,
    tile_cycles,
)
from simulator.kernels.elementwise import predict_elementwise, predict_rowwise
from simulator.kernels.gemm import predict_gemm
from simulator.kernels.machine import UNIT_OF_OP, KernelPrediction, Machine, fill_drain_s, finish, machine, need
from simulator.kernels.schedule import makespan_cycles

__all__ = ["kernel_for", "predict_case", "predict_variant"]

FUSED = ("fa2", "fa3")


# ------------------------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class _Layout:
    """What the kernels read off a cascade, independent of sizes."""

    key_rank: str
    tile_rank: str
    key_parts: tuple[str, ...]  # the key rank's partition, outer to inner (() when not partitioned)
    split_parts: tuple[str, ...]  # parts before the tile part: splits outside the tile loop
    key_vars: frozenset[str]  # the key rank's variable and its parts'
    in_tile: frozenset[str]  # key variables inside one tile: parts after the tile part, the unsplit key
    inner: str  # the innermost key variable
    query_vars: tuple[str, ...]  # outputs' free variables indexing no input read at in-tile key positions (those
    # the most reductions over a tile's keys iterate: p; r, p of GQA; h, p of MQA and MLA)
    streamed: frozenset[str]  # inputs read at in-tile key positions (K, V)
    passes: int  # passes over the key rank


@lru_cache(maxsize=256)
def _layout(cascade: Cascade) -> _Layout:
    key, tile = key_ranks(cascade)
    parts = cascade.partitions.get(key, ())
    at = parts.index(tile) if tile in parts else -1
    split = parts[:at] if at >= 0 else ()
    after = parts[at + 1 :] if at >= 0 else ()
    key_vars = frozenset({key.lower(), *(r.lower() for r in cascade.children(key))})
    iterated = {v for e in cascade.einsums for v in e.iter_vars}
    in_tile = frozenset({p.lower() for p in after} | ({key.lower()} if key.lower() in iterated else set()))
    inner = after[-1].lower() if after else key.lower()
    streamed: set[str] = set()
    indexing: set[str] = set()  # variables that index a streamed input
    for e in cascade.einsums:
        for acc in e.reads:
            used = {v.name for idx in acc.indices for v in index_vars(idx)}
            if acc.tensor in cascade.inputs and used & in_tile:
                streamed.add(acc.tensor)
                indexing |= used
    free = [v for o in cascade.outputs for v in cascade.einsum_by_name[o].out_vars]
    candidates = list(dict.fromkeys(v for v in free if v not in key_vars and v not in indexing))
    reducing = [e for e in cascade.einsums if in_tile & set(e.reduce_vars)]  # the reductions over a tile's keys
    count = {v: sum(v in e.iter_vars for e in reducing) for v in candidates}
    query = tuple(v for v in candidates if count[v] == max(count.values(), default=0))
    passes = pass_analysis(cascade, key).passes
    return _Layout(key, tile, parts, split, key_vars, in_tile, inner, query, frozenset(streamed), passes)


def _row_rank(cascade: Cascade, lay: _Layout, sizes: Mapping[str, int]) -> str:
    """The query rank one CTA blocks (module docstring): the largest, the later in the output on ties."""
    query = {v.upper() for v in lay.query_vars}

    def rank(r: str) -> str:  # a query rank all of whose parts are query variables (P of P1 * P0)
        parent = cascade.parent_of.get(r)
        return parent if parent and set(cascade.partitions[parent]) <= query else r

    ranks = [rank(v.upper()) for v in lay.query_vars]
    if not ranks:
        raise SpecError(f"{cascade.name}: no query rank: every free variable of its outputs indexes the keys")
    return max(reversed(ranks), key=lambda r: sizes[r])


def _parts(cascade: Cascade, rank: str) -> tuple[str, ...]:
    return cascade.partitions.get(rank, ()) or (rank,)


def _strides(rank_parts: tuple[str, ...], sizes: Mapping[str, int]) -> dict[str, int]:
    """Variable -> positions per step, for a rank's parts (outer to inner)."""
    out, stride = {}, 1
    for part in reversed(rank_parts):
        out[part.lower()] = stride
        stride *= sizes[part]
    return out


# ------------------------------------------------------------------------------------- the tile program


@dataclass(frozen=True)
class _Program:
    """Per-unit ops of one tile, CTA and key side, read off the cascade lowered at one tile (module docstring)."""

    pops: tuple[tuple[str, ...], ...]  # CTA populations: their Einsums (tile, CTA and recomputed ones)
    tile_einsums: tuple[tuple[str, ...], ...]  # per population: the Einsums run per visited tile
    recomputed: frozenset[str]  # key-side maps of inputs recomputed in the tiles (phi(K))
    grid: tuple[tuple[str, ...], ...]  # per population: its grid variables
    tile: tuple[dict[str, float], ...]  # unit -> ops per visited tile (mask selects included)
    selects: tuple[dict[str, float], ...]  # Einsum -> its select ops per tile
    pair_einsums: frozenset[str]  # Einsums iterating an in-tile key and a row variable
    tile_only: tuple[dict[str, float], ...]  # unit -> per-tile ops of the other per-tile Einsums
    cta: tuple[dict[str, float], ...]  # unit -> ops per CTA
    kv_tile_words: tuple[float, ...]  # key-indexed words streamed per tile
    q_tile_words: tuple[float, ...]  # row-indexed words re-read per tile
    o_tile_words: tuple[float, ...]  # output words per CTA
    key_einsums: tuple[str, ...]
    materialized: tuple[tuple[str, float, bool], ...]  # (tensor, words per key tile per head-unit, read per tile)
    main_inputs: frozenset[str]
    key_inputs: frozenset[str]
    width: int  # tile width: words per key of the operands a tile reads (the larger side)
    reads: tuple[frozenset[str], ...]  # per population: the inputs it depends on


def _units(ops: Mapping[str, float], scale: float = 1.0) -> dict[str, float]:
    out = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0}
    for kind, count in ops.items():
        unit = UNIT_OF_OP.get(kind, "fma")
        out[unit] += (2.0 if unit == "tensor" else 1.0) * count * scale
    return out


def _add(a: dict[str, float], b: Mapping[str, float]) -> None:
    for k, v in b.items():
        a[k] = a.get(k, 0.0) + v


def _tile_sizes(cascade: Cascade, lay: _Layout, row: str, grid: set[str], sizes: Mapping[str, int], br: int,
                bc: int) -> dict[str, int]:  # fmt: skip
    """The case's sizes at one tile: grid ranks 1, the row rank Br and the key rank Bc (outer parts 1)."""
    tile = dict(sizes)
    tile.update({v.upper(): 1 for v in grid})
    for rank, size in ((lay.key_rank, bc), (row, br)):
        parts = cascade.partitions.get(rank, ())
        tile.update({p: 1 for p in parts[:-1]})
        if parts:
            tile[parts[-1]] = size
        tile[rank] = size
    for parent, parts in cascade.partitions.items():  # parents of resized parts follow them
        if parent not in (lay.key_rank, row):
            tile[parent] = math.prod(tile[p] for p in parts)
    return tile


def _classify(low: LoweredCascade, lay: _Layout, row_vars: set[str]):
    """Einsum kinds (tile, key, cta), the key-side maps recomputed in the tiles, the CTA populations (the main
    kernel's Einsums connected by the tensors they pass) and each population's grid variables."""

    def kind(e) -> str:
        vs = set(e.vars)
        if vs & lay.key_vars and vs & row_vars:
            return "tile"
        return "key" if vs & lay.key_vars else "cta"

    kinds = {e.name: kind(e) for e in low.einsums}
    recomputed = frozenset(
        e.name
        for e in low.einsums
        if kinds[e.name] == "key"
        and bool(e.incidence[0].all())
        and "mac" not in e.ops_per_point
        and all(t in low.inputs for t in e.inputs)
        and any(kinds[c] != "key" for c in low.consumers.get(e.name, ()))
    )
    main = [e for e in low.einsums if kinds[e.name] != "key" or e.name in recomputed]
    parent = {e.name: e.name for e in main}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for e in main:
        for t in e.inputs:
            if t in parent:
                parent[root(t)] = root(e.name)
    roots = list(dict.fromkeys(root(e.name) for e in main))
    pops = tuple(tuple(e.name for e in main if root(e.name) == r) for r in roots)
    grids = []
    for members in pops:
        groups = [set(low.einsum(x).vars) for x in members if kinds[x] == "tile"]
        groups = groups or [set(low.einsum(x).vars) for x in members]
        grids.append(tuple(sorted(set.intersection(*groups) - lay.key_vars - row_vars)))
    return kinds, recomputed, pops, tuple(grids)


@lru_cache(maxsize=1024)
def _program(cascade: Cascade, row: str, tile_key: tuple[tuple[str, int], ...], br: int, bc: int) -> _Program:
    lay = _layout(cascade)
    low = lower(cascade, dict(tile_key))
    key_vars, in_tile = lay.key_vars, lay.in_tile
    row_vars = {row.lower(), *(p.lower() for p in cascade.partitions.get(row, ()))}

    kinds, recomputed, pops, grid = _classify(low, lay, row_vars)
    key_side = [e for e in low.einsums if kinds[e.name] == "key"]
    main = [e for e in low.einsums if kinds[e.name] != "key" or e.name in recomputed]
    pop_of = {x: i for i, members in enumerate(pops) for x in members}
    n = len(pops)
    tile: list[dict[str, float]] = [{} for _ in range(n)]
    tile_only: list[dict[str, float]] = [{} for _ in range(n)]
    cta: list[dict[str, float]] = [{} for _ in range(n)]
    selects: list[dict[str, float]] = [{} for _ in range(n)]
    streamed: list[set[str]] = [set() for _ in range(n)]
    q_read: list[set[str]] = [set() for _ in range(n)]
    main_inputs: set[str] = set()
    pair_einsums: set[str] = set()
    sides: list[dict[str, set[str]]] = [{"key": set(), "value": set()} for _ in range(n)]
    for e in main:
        p = pop_of[e.name]
        main_inputs.update(t for t in e.inputs if t in low.inputs)
        if kinds[e.name] == "cta":
            _add(cta[p], _units(e.ops()))
            continue
        # a per-tile Einsum, or an elementwise key-side map recomputed in the tiles
        _add(tile[p], _units(e.ops()))
        selects[p][e.name] = float(e.ops().get("select", 0))
        if kinds[e.name] == "tile" and lay.inner in e.vars and set(e.vars) & row_vars:
            pair_einsums.add(e.name)
        else:
            _add(tile_only[p], _units({kk: v for kk, v in e.ops().items() if kk != "select"}))
        reduces_keys = bool(set(e.vars) & in_tile - set(_out(e)))
        for ti, t in enumerate(e.tensors[1:], start=1):
            keyed = any(e.incidence[ti, j] for j, v in enumerate(e.vars) if v in key_vars)
            queried = any(e.incidence[ti, j] for j, v in enumerate(e.vars) if v in row_vars)
            from_cta = t in low.producer and kinds.get(low.producer[t]) == "cta"
            from_key = t in low.producer and kinds[low.producer[t]] == "key" and t not in recomputed
            if keyed and (t in low.inputs or from_key):
                streamed[p].add(t)
                if any(e.incidence[ti, j] for j, v in enumerate(e.vars) if v in in_tile):
                    sides[p]["value" if reduces_keys else "key"].add(t)
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
    made = {name: w for name, w, _ in materialized}
    kv_words = tuple(sum(words[t] if t in low.inputs else made[t] for t in streamed[p]) for p in range(n))
    q_words = tuple(float(sum(words[t] for t in q_read[p])) for p in range(n))
    o_words = [0.0] * n
    for o in low.outputs:
        o_words[pop_of[o]] += words[o]
    tile_einsums = tuple(tuple(x for x in pops[p] if kinds[x] == "tile" or x in recomputed) for p in range(n))
    width = 0.0
    for side in sides:
        per_key = {t: (words[t] if t in low.inputs else made[t]) / bc for t in side["key"] | side["value"]}
        width = max(width, sum(per_key[t] for t in side["key"]), sum(per_key[t] for t in side["value"]))
    if not width:  # no tile reads keys: the widest input read at key positions
        widths = [words[t] / bc for t in low.inputs if t in lay.streamed]
        width = max(widths, default=0.0)
    key_inputs = frozenset(t for e in key_side for t in e.inputs if t in low.inputs)
    reads = tuple(frozenset(_inputs_of(low, pops[p])) for p in range(n))
    return _Program(
        pops, tile_einsums, recomputed, grid, tuple(tile), tuple(selects), frozenset(pair_einsums),
        tuple(tile_only), tuple(cta), kv_words, q_words, tuple(o_words), tuple(e.name for e in key_side),
        tuple(materialized), frozenset(main_inputs), key_inputs, max(1, math.ceil(width)), reads,
    )  # fmt: skip


def _out(e) -> tuple[str, ...]:
    """A lowered Einsum's output variables."""
    return tuple(v for j, v in enumerate(e.vars) if e.incidence[0, j])


def _inputs_of(low: LoweredCascade, names: tuple[str, ...]) -> set[str]:
    """Inputs the Einsums ``names`` depend on, directly or through other Einsums."""
    seen, todo, out = set(), list(names), set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        for t in low.einsum(n).inputs:
            if t in low.inputs:
                out.add(t)
            elif t in low.producer:
                todo.append(low.producer[t])
    return out


# ------------------------------------------------------------------------------------------- the case


@dataclass(frozen=True)
class _Shape:
    """A case as the kernels see it: layout, row rank, regions, useful work."""

    case: Any
    lay: _Layout
    row: str
    grid: frozenset[str]  # grid variables of every population
    regions: Mapping[str, Formula]
    whole: LoweredCascade
    points: Mapping[str, float]  # Einsum -> effective points
    memo: dict = field(default_factory=dict, compare=False, repr=False)
    """What the tile search derives from the case alone, by what else it depends on (:func:`_tile_plan`,
    :func:`_pairs`, :func:`_useful`): the case is costed at many tiles."""

    @cached_property
    def effective(self) -> dict[str, dict[str, float]]:
        """Einsum -> op kind (``mac`` fused, as lowered) -> effective operations (callers only read it)."""
        return {e.name: {k: v * self.points[e.name] for k, v in e.ops_per_point.items()} for e in self.whole.einsums}

    @property
    def sizes(self) -> Mapping[str, int]:
        return self.case.sizes


def _shape(case: Any) -> _Shape:
    return _shape_of(case.cascade, case.name, _key(case.sizes), _key(case.density), _Frozen(case))


@lru_cache(maxsize=256)
def _shape_of(cascade: Cascade, name: str, sizes_key: tuple, density_key: tuple, carried: _Frozen) -> _Shape:
    case = carried.case
    sizes = case.sizes
    lay = _layout(cascade)
    row = _row_rank(cascade, lay, sizes)
    row_vars = {row.lower(), *(p.lower() for p in cascade.partitions.get(row, ()))}
    whole = lower(cascade, sizes)
    grid = frozenset(v for g in _classify(whole, lay, row_vars)[3] for v in g)
    return _Shape(case, lay, row, grid, _regions(cascade, _key(sizes)), whole,
                  _effective(cascade, _key(sizes), _key(case.density)))  # fmt: skip


class _Frozen:
    """A case carried through a cache whose key it is not part of (the other arguments are)."""

    def __init__(self, case: Any) -> None:
        self.case = case

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Frozen)


def _key(mapping: Mapping) -> tuple:
    return tuple(sorted(mapping.items()))


@lru_cache(maxsize=256)
def _regions(cascade: Cascade, sizes: tuple) -> dict[str, Formula]:
    return work_regions(cascade, dict(sizes))


@lru_cache(maxsize=256)
def _effective(cascade: Cascade, sizes: tuple, density: tuple) -> dict[str, float]:
    """Einsum -> effective points."""
    return effective_points(cascade, dict(sizes), dict(density) or None)


def _program_of(sh: _Shape, br: int, bc: int) -> _Program:
    sizes = _tile_sizes(sh.case.cascade, sh.lay, sh.row, set(sh.grid), sh.sizes, br, bc)
    return _program(sh.case.cascade, sh.row, _key(sizes), br, bc)


# --------------------------------------------------------------------------------------- masks -> tiles


@dataclass(frozen=True)
class _PopTiles:
    """One CTA sub-population: its CTAs' visited and interior tiles (expected, under block masks)."""

    reps: int  # CTAs per row block: batch x heads of the population
    visited: np.ndarray  # float64[row blocks]
    interior: np.ndarray  # float64[row blocks]


def _mode(sh: _Shape, f: Formula, rank: str) -> Formula | None:
    """``f`` over the rank's whole position (its own variable), or None when it reads a part on its own."""
    parts = sh.case.cascade.partitions.get(rank, ())
    if not parts:
        return f
    return positions(f, _strides(parts, sh.sizes), rank.lower())


def _blocked(sh: _Shape, prog: _Program) -> tuple[bool, bool]:
    """(key, row): whether the tile must lie in one block of the innermost part of the rank's partition."""
    cascade, lay = sh.case.cascade, sh.lay
    key_parts = {p.lower() for p in lay.key_parts}
    row_parts = {p.lower() for p in cascade.partitions.get(sh.row, ())}
    key = row = False
    for p in range(len(prog.pops)):
        f, g = _pop_regions(sh, prog, p)
        for h in (f, g):
            key |= bool(key_parts) and _mode(sh, h, lay.key_rank) is None
            row |= bool(row_parts) and _mode(sh, h, sh.row) is None
    for mask in sh.case.density:
        ranks = {r.lower() for r in cascade.tensors[mask].ranks}
        key |= bool(ranks & key_parts)
        row |= bool(ranks & row_parts)
    return key, row


def _pop_regions(sh: _Shape, prog: _Program, p: int) -> tuple[Formula, Formula]:
    """(where the population works, where its masking Einsums need no mask): the union of its tile Einsums'
    regions, and the conjunction of those of its tile Einsums that select under a mask."""
    whole = sh.whole
    work, masked = [], []
    for n in prog.tile_einsums[p]:
        if n in prog.recomputed:  # per key, not per query: it follows the tiles the others visit
            continue
        r = sh.regions[n]
        if r is not True or sh.lay.in_tile & set(whole.einsum(n).vars):
            work.append(r)
        if r is not True and prog.selects[p].get(n):
            masked.append(r)
    union = True if not work or any(w is True for w in work) else any_of(*work)
    return union, all_of(*masked) if masked else union


@dataclass(frozen=True)
class _TilePlan:
    """How :func:`_tiles` counts a population's tiles, whatever the tile: its regions (over whole positions where
    the region reads them only so), the grid variables the regions read and the comparisons resolving them."""

    union: Formula
    clean: Formula
    key_merged: bool
    row_merged: bool
    used: frozenset[str]
    enumerated: tuple[str, ...]
    reps: int
    linked: tuple[Formula, ...]
    points: frozenset[str]
    resolved: bool


def _tile_plan(sh: _Shape, prog: _Program, p: int) -> _TilePlan:
    """The plan of population ``p`` (:class:`_TilePlan`), memoized on the case by what it depends on: the
    population's tile Einsums, which of them select under a mask, the recomputed maps and its grid."""
    selecting = tuple(n for n in prog.tile_einsums[p] if prog.selects[p].get(n))
    key = ("tile plan", prog.tile_einsums[p], selecting, prog.recomputed, prog.grid[p])
    plan = sh.memo.get(key)
    if plan is None:
        plan = sh.memo[key] = _make_tile_plan(sh, prog, p)
    return plan


def _make_tile_plan(sh: _Shape, prog: _Program, p: int) -> _TilePlan:
    lay, sizes = sh.lay, sh.sizes
    union, clean = _pop_regions(sh, prog, p)
    grid = prog.grid[p]
    key_f = [_mode(sh, f, lay.key_rank) for f in (union, clean)]
    key_merged = all(f is not None for f in key_f)
    if key_merged:
        union, clean = key_f
    row_f = [_mode(sh, f, sh.row) for f in (union, clean)]
    row_merged = all(f is not None for f in row_f)
    if row_merged:
        union, clean = row_f
    used = _fvars(union) | _fvars(clean)
    enumerated = [v for v in grid if v in used]
    reps = math.prod(sizes[v.upper()] for v in grid if v not in used)
    # grid variables the region compares only with one value of other enumerated variables (S2's head shard,
    # in n == hn) are resolved by the truth of those comparisons rather than enumerated
    between = [part.lower() for part in lay.key_parts[1:-1]] if not key_merged else []
    points = {*enumerated, *between}
    linked = [c for c in comparisons(any_of(union, clean)) if _fvars(c) & set(enumerated)]
    resolved = bool(linked) and all(_fvars(c) <= points for c in linked) and 2 ** len(linked) < math.prod(
        sizes[v.upper()] for v in enumerated)  # fmt: skip
    return _TilePlan(union, clean, key_merged, row_merged, frozenset(used), tuple(enumerated), reps, tuple(linked),
                     frozenset(points), resolved)  # fmt: skip


def _tiles(sh: _Shape, prog: _Program, p: int, br: int, bc: int) -> list[_PopTiles]:
    """Visited and interior key tiles per row block of population ``p``, per value of the grid variables its
    region reads (module docstring)."""
    case, lay, sizes = sh.case, sh.lay, sh.sizes
    cascade = case.cascade
    plan = _tile_plan(sh, prog, p)
    union, clean, key_merged, row_merged = plan.union, plan.clean, plan.key_merged, plan.row_merged
    used, enumerated, reps = set(plan.used), list(plan.enumerated), plan.reps
    linked, points, resolved = list(plan.linked), set(plan.points), plan.resolved
    n_rows = -(-sizes[sh.row] // br)
    starts = np.arange(n_rows, dtype=np.int64) * br
    axes: list[tuple[str, np.ndarray, np.ndarray]] = []  # (variable, low, high) per value, outer first
    if row_merged:
        axes.append((sh.row.lower(), starts, np.minimum(starts + br, sizes[sh.row]) - 1))
    else:  # Br divides the innermost part: one block's digits
        parts = cascade.partitions[sh.row]
        inner = sizes[parts[-1]]
        digits = {parts[-1].lower(): (starts % inner, starts % inner + br - 1)}
        rest = starts // inner
        for part in reversed(parts[:-1]):
            digits[part.lower()] = (rest % sizes[part], rest % sizes[part])
            rest = rest // sizes[part]
        axes.append(("#row", np.arange(n_rows), np.arange(n_rows)))
    fixed: dict[str, Any] = {}
    step: dict[str, int] = {}
    last: dict[str, int] = {}
    inner_rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    if key_merged:
        k = lay.key_rank.lower()
        fixed[k] = (0, bc - 1)
        step[k], last[k] = bc, sizes[lay.key_rank] - 1
        tiles = -(-sizes[lay.key_rank] // bc)
    else:  # Bc divides the innermost part: solved along the outermost part, the others enumerated
        parts = lay.key_parts
        outer = parts[0].lower()
        fixed[outer], step[outer] = (0, 0), 1
        tiles = sizes[parts[0]]
        for part in parts[1:-1]:
            inner_rows.append((part.lower(), np.arange(sizes[part]), np.arange(sizes[part])))
        chunks = np.arange(sizes[parts[-1]] // bc) * bc
        inner_rows.append((parts[-1].lower(), chunks, chunks + bc - 1))
    grid_axes = [] if resolved else [(v, np.arange(sizes[v.upper()]), np.arange(sizes[v.upper()])) for v in enumerated]
    every = grid_axes + axes + inner_rows
    grids = np.meshgrid(*(np.arange(len(lo)) for _, lo, _ in every), indexing="ij")
    low: dict[str, Any] = {v: lo for v, (lo, _) in fixed.items()}
    high: dict[str, Any] = {v: hi for v, (_, hi) in fixed.items()}
    for (v, lo, hi), g in zip(every, grids, strict=True):
        if v == "#row":
            for part, (dl, dh) in digits.items():
                low[part], high[part] = dl[g.ravel()], dh[g.ravel()]
        else:
            low[v], high[v] = lo[g.ravel()], hi[g.ravel()]
    for v in used - set(low) - (set(enumerated) if resolved else set()):  # any other variable: its whole range
        low[v], high[v] = 0, sizes[v.upper()] - 1
    per_cta = math.prod(len(lo) for _, lo, _ in inner_rows)
    if resolved:
        counts = []
        for truth in itertools.product((True, False), repeat=len(linked)):
            fixed_truth = dict(zip(linked, truth, strict=True))
            counts.append(count_tiles(assign(union, fixed_truth), low, high, step=step, tiles=tiles, last=last,
                                      interior=assign(clean, fixed_truth)))  # fmt: skip
        combos = list(itertools.product(*(range(sizes[v.upper()]) for v in enumerated)))
        visited = np.empty((len(combos), n_rows * per_cta), dtype=np.int64)
        interior = np.empty_like(visited)
        all_visited, all_interior = np.stack([c.visited for c in counts]), np.stack([c.interior for c in counts])
        picked = np.arange(n_rows * per_cta)
        for gi, combo in enumerate(combos):
            env = {**{v: low[v] for v in points - set(enumerated)}, **dict(zip(enumerated, combo, strict=True))}
            index = np.zeros(n_rows * per_cta, dtype=np.int64)
            for c in linked:  # the assignment's position in the product: True first
                index = index * 2 + np.logical_not(np.broadcast_to(evaluate(c, env), index.shape))
            visited[gi] = all_visited[index, picked]
            interior[gi] = all_interior[index, picked]
        n_groups = len(combos)
    else:
        counted = count_tiles(union, low, high, step=step, tiles=tiles, last=last, interior=clean)
        visited, interior = counted.visited, counted.interior
        n_groups = math.prod(sizes[v.upper()] for v in enumerated)
    shape = (n_groups, n_rows, per_cta)
    visited = visited.reshape(shape).sum(axis=2).astype(np.float64)
    interior = np.minimum(interior.reshape(shape).sum(axis=2), visited)
    live = _live(sh, prog, p, br, bc)
    return [_PopTiles(reps, visited[g] * live, interior[g] * live) for g in range(n_groups)]


def _fvars(f: Formula) -> set[str]:
    return {v for coeffs, _ in affine_forms(f) for v in coeffs} if not isinstance(f, bool) else set()


def _live(sh: _Shape, prog: _Program, p: int, br: int, bc: int) -> float:
    """The probability that a tile of population ``p`` is kept by the block masks it reads (module docstring)."""
    cascade, sizes = sh.case.cascade, sh.sizes
    spans: dict[str, int] = {}
    for rank, width in ((sh.lay.key_rank, bc), (sh.row, br)):
        for part, stride in _strides(_parts(cascade, rank), sizes).items():
            spans[part] = max(1, min(sizes[part.upper()], width // stride))
        spans[rank.lower()] = width
    live = 1.0
    for mask, d in sh.case.density.items():
        if mask not in prog.reads[p]:
            continue
        covered = 1
        for r in cascade.tensors[mask].ranks:
            v = r.lower()
            covered *= 1 if v in sh.grid else spans.get(v, sizes[r])
        live *= 1.0 - (1.0 - d) ** covered
    return live


# ------------------------------------------------------------------------------------------- the kernel


def _head_units(sh: _Shape, e_vars: tuple[str, ...]) -> int:
    return math.prod(sh.sizes[v.upper()] for v in e_vars if v in sh.grid)


def _key_side(m: Machine, prog: _Program, sh: _Shape, key_tiles: int) -> dict:
    """The key-side kernel: its time (calibrated rates, overlapped with its DRAM traffic), ops and bytes;
    ``key_tiles``: the steps of the tile rank (results per tile are written once per step)."""
    e, clock_sms = m.elem_bytes, m.clock_hz * m.sms
    units = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0}
    if not prog.key_einsums:
        return {"s": 0.0, "bytes": 0.0, "materialized": 0.0, **units}
    whole, words = sh.whole, sh.whole.tensor_words
    for name in prog.key_einsums:
        _add(units, _units(whole.einsum(name).ops()))
    materialized = sum(
        w * _head_units(sh, whole.einsum(name).vars) * (key_tiles if per_tile else 1) * e
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


def _pairs(sh: _Shape, prog: _Program) -> float:
    """Unmasked (row, key) pairs of all CTAs: the most any per-pair Einsum has (its effective points over its
    feature variables). Memoized on the case by the per-pair Einsums."""
    key = ("pairs", prog.pair_einsums)
    if key not in sh.memo:
        sh.memo[key] = _count_pairs(sh, prog)
    return sh.memo[key]


def _count_pairs(sh: _Shape, prog: _Program) -> float:
    most = 0.0
    for name in prog.pair_einsums:
        x = sh.whole.einsum(name)
        features = [v for v in x.vars if v not in sh.lay.key_vars and v not in sh.grid and v.upper() not in
                    (sh.row, *sh.case.cascade.partitions.get(sh.row, ()))]  # fmt: skip
        points = sh.points[name] / math.prod(sh.sizes[v.upper()] for v in features)
        most = max(most, points)
    return most


def _useful(sh: _Shape, prog: _Program) -> dict[str, float]:
    """Tensor and SFU work of the per-pair Einsums over their effective points (masked pairs excluded); memoized
    on the case by the per-pair Einsums (callers get a copy)."""
    key = ("useful", prog.pair_einsums)
    if key not in sh.memo:
        out = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0}
        for name in prog.pair_einsums:
            _add(out, _units(sh.effective[name]))
        sh.memo[key] = out
    return dict(sh.memo[key])


def _fused_one(m: Machine, flavour: str, t: FlashTile, sh: _Shape, blocked: bool, best_s: float) -> Any:
    """One tile candidate; None when a lower bound shows it is slower than ``best_s`` (with ``best_s = -inf``:
    that lower bound, in seconds). ``blocked``: the tile lies in one block of the key partition's innermost
    part (which then keeps its size)."""
    prog = _program_of(sh, t.br, t.bc)
    e = m.elem_bytes
    key_rank = sh.lay.key_rank
    key_tiles = sh.sizes[sh.lay.tile_rank] if blocked else -(-sh.sizes[key_rank] // t.bc)
    key = _key_side(m, prog, sh, key_tiles)
    words = sh.whole.tensor_words
    main_bytes = (sum(words[x] for x in prog.main_inputs) + sum(words[o] for o in sh.case.cascade.outputs)) * e
    main_bytes += key["materialized"]
    memory_s = main_bytes / m.dram_bytes_per_s + key["s"]
    pops = []
    for p in range(len(prog.pops)):
        ops = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0, **prog.tile[p]}
        droppable = sum(v for n, v in prog.selects[p].items() if sh.regions[n] is not True)
        interior_ops = {**ops, "fma": ops["fma"] - droppable}
        kv_b, q_b = prog.kv_tile_words[p] * e, prog.q_tile_words[p] * e
        plain, parts = tile_cycles(m, flavour, t, interior_ops, kv_tile_bytes=kv_b, q_tile_bytes=q_b)
        masked, _ = tile_cycles(m, flavour, t, ops, kv_tile_bytes=kv_b, q_tile_bytes=q_b)
        cta_ops = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0, **prog.cta[p]}
        epilogue = cta_ops["tensor"] / m.tensor_rate + cta_ops["sfu"] / m.sfu_rate + cta_ops["fma"] / m.fma_rate
        fixed = m.latency_s * m.clock_hz + (q_b + kv_b + prog.o_tile_words[p] * e) / m.l2_share_bytes_per_clock
        pops.append((plain, parts, masked, cta_ops, epilogue, fixed))
    # a lower bound before counting tiles: every unmasked pair lies in a visited tile of br x bc pairs
    ctas = -(-sh.sizes[sh.row] // t.br)
    least = sum(ctas * math.prod(sh.sizes[v.upper()] for v in prog.grid[p]) * (q[4] + q[5] / t.per_sm)
                for p, q in enumerate(pops))  # fmt: skip
    least += _pairs(sh, prog) / (t.br * t.bc) * min(q[0] for q in pops)
    bound = max(least / m.sms / m.clock_hz + key["s"], memory_s)
    if best_s == -math.inf:
        return bound
    if bound > best_s:
        return None
    groups, visited_total, flops, exp_ops, work = [], 0.0, 0.0, 0.0, 0.0
    heaviest: tuple[float, dict] = (-1.0, {})
    for p, (plain, parts, masked, cta_ops, epilogue, fixed) in enumerate(pops):
        only = {"tensor": 0.0, "sfu": 0.0, **prog.tile_only[p]}
        if prog.tile_einsums[p]:
            counts = _tiles(sh, prog, p, t.br, t.bc)
        else:  # no per-tile Einsums (non-causal linear attention): no key tiles to walk
            none = np.zeros(-(-sh.sizes[sh.row] // t.br))
            counts = [_PopTiles(math.prod(sh.sizes[v.upper()] for v in prog.grid[p]), none, none)]
        for c in counts:
            cta = c.interior * plain + (c.visited - c.interior) * masked + epilogue + fixed / t.per_sm
            reps = c.reps
            groups.append((cta, reps))
            n_vis = float(c.visited.sum()) * reps
            visited_total += n_vis
            n_cta = c.visited.size * reps
            flops += only["tensor"] * n_vis + cta_ops["tensor"] * n_cta
            exp_ops += only["sfu"] * n_vis + cta_ops["sfu"] * n_cta
            group_work = float(cta.sum()) * reps
            work += group_work
            if group_work > heaviest[0]:
                share = dict(parts) if n_vis else {"tensor": cta_ops["tensor"] / m.tensor_rate,
                                                   "sfu": cta_ops["sfu"] / m.sfu_rate,
                                                   "fma": cta_ops["fma"] / m.fma_rate, "l2": 0.0}  # fmt: skip
                heaviest = (group_work, share)
    useful = _useful(sh, prog)
    flops += useful["tensor"]
    exp_ops += useful["sfu"]
    if max(work / m.sms / m.clock_hz + key["s"], memory_s) > best_s:  # the makespan is at least work / SMs
        return None
    cta_cycles = np.concatenate([np.tile(cta, reps) for cta, reps in groups])  # row blocks fastest, then heads
    if flavour == "fa3":
        cta_cycles = np.sort(cta_cycles)[::-1]
    compute_s = makespan_cycles(cta_cycles, m.sms, t.per_sm) / m.clock_hz
    # fill and drain: the first wave's Q tiles and first K/V tiles (one per head in it), the last wave's outputs
    first = min(int(cta_cycles.size), m.sms * t.per_sm)
    row_blocks = -(-sh.sizes[sh.row] // t.br)
    fill = sum(first * prog.q_tile_words[p] + -(-first // row_blocks) * prog.kv_tile_words[p] for p in range(len(pops)))
    drain = first * max(prog.o_tile_words, default=0.0)
    fill_drain = fill_drain_s(m, fill * e, drain * e)
    compute_s += fill_drain
    share = heaviest[1]
    if "chain" in share:  # fa3: a warpgroup's GEMM-softmax chain binds; named after its softmax's larger unit
        chain = share["chain"]
        share = {k: v for k, v in share.items() if k != "chain"}
        unit = "sfu" if share["sfu"] >= share["fma"] else "fma"
        if chain > max(v for k, v in share.items() if k != "l2"):
            share[unit] = chain
    core = {k: v for k, v in share.items() if k != "l2"}
    bound = "l2" if share.get("l2", 0.0) >= max(core.values()) else max(core, key=core.__getitem__)
    times = {bound: compute_s + key["s"], "memory": memory_s}
    tiles = flash_tiles(m, t, int(cta_cycles.size), round(visited_total), heaviest[1]) | {
        "key_side_s": key["s"],
        "fill_drain_s": fill_drain,
    }
    return {
        "time": max(times.values()),
        "times": times,
        "tiles": tiles,
        "dram": main_bytes + key["bytes"],
        "flops": flops + key["tensor"],
        "exp_ops": exp_ops + key["sfu"],
        "key_side": bool(prog.key_einsums),
        "pops": len(prog.pops),
    }


def _candidates(m: Machine, flavour: str, sh: _Shape) -> tuple[list[FlashTile], str, bool]:
    """Every fitting tile (module docstring), the constraint on it in words, and whether the key tile must lie
    in one block."""
    nominal = _program_of(sh, 64, 64)
    tiles = flash_candidates(m, flavour, nominal.width)
    key_blocked, row_blocked = _blocked(sh, nominal)
    cascade, words = sh.case.cascade, []
    if key_blocked:
        kb = sh.sizes[_parts(cascade, sh.lay.key_rank)[-1]]
        tiles = [t for t in tiles if kb % t.bc == 0]
        words.append(f"Bc dividing the key block {kb}")
    if row_blocked:
        qb = sh.sizes[_parts(cascade, sh.row)[-1]]
        tiles = [t for t in tiles if qb % t.br == 0]
        words.append(f"Br dividing the query block {qb}")
    return tiles, f"tile width {nominal.width}" + "".join(f", {w}" for w in words), key_blocked


def _predict_fused(m: Machine, flavour: str, sh: _Shape, tile: tuple[int, int] | None = None) -> KernelPrediction:
    case = sh.case
    check_fused(m, flavour, case.head_dim)
    candidates, what, blocked = _candidates(m, flavour, sh)
    need(
        bool(candidates),
        f"{flavour}:{case.name}: no Br x Bc tile fits ({what}) in {m.spec.id}'s shared memory "
        f"({m.spec.smem_bytes_per_sm:.0f} bytes per SM, smem_bytes_per_sm) and register file "
        f"({m.spec.regs_bytes_per_sm:.0f} bytes per SM, regs_bytes_per_sm) for dtype {m.dtype}",
    )
    if tile is not None:  # a given mapping's tile (a saved design): the fastest of its configurations
        fits = sorted({(t.br, t.bc) for t in candidates})
        candidates = [t for t in candidates if (t.br, t.bc) == tuple(tile)]
        need(bool(candidates), f"{flavour}:{case.name}: tile block_m x block_n = {tile[0]} x {tile[1]} is not one "
             f"this kernel can run here; the tiles that fit: {', '.join(f'{a} x {b}' for a, b in fits)}")  # fmt: skip
    # every candidate's lower bound first; then the candidates in bound order, skipping those whose bound exceeds
    # the best time so far (the fastest wins, the first in candidate order among equals)
    bounds = [_fused_one(m, flavour, t, sh, blocked, -math.inf) for t in candidates]
    best, best_at = None, -1
    for i in sorted(range(len(candidates)), key=lambda j: (bounds[j], j)):
        if best is not None and bounds[i] > best["time"]:
            break
        r = _fused_one(m, flavour, candidates[i], sh, blocked, best["time"] if best else math.inf)
        if r is not None and (best is None or (r["time"], i) < (best["time"], best_at)):
            best, best_at = r, i
    words = sh.whole.tensor_words
    compulsory = sum(words[t] for t in (*case.cascade.inputs, *case.cascade.outputs)) * m.elem_bytes
    notes = (f"cascade {case.name}: fused one-pass kernel, {best['pops']} CTA population(s), rows of {sh.row}",
             *_param_notes(case))  # fmt: skip
    return finish(m, op="sdpa", kernel=f"{flavour}:{case.name}", flops=best["flops"], hbm_bytes=best["dram"],
                  times=best["times"], tiles=best["tiles"], compulsory_bytes=compulsory, exp_ops=best["exp_ops"],
                  launches=2 if best["key_side"] else 1, notes=notes)  # fmt: skip


def _param_notes(case: Any) -> tuple[str, ...]:
    return tuple(f"{k} = {v:g}" for k, v in sorted(case.params.items()))


# ---------------------------------------------------------------------------------------- decode, split-K


def _predict_decode(m: Machine, sh: _Shape) -> KernelPrediction:
    """The decode kernel fed from the case (module docstring)."""
    case, lay, sizes = sh.case, sh.lay, sh.sizes
    cascade = case.cascade
    prog = _program_of(sh, 64, 64)
    rows = math.prod(sizes[v.upper()] for v in lay.query_vars)
    query = set(lay.query_vars)
    groups = math.prod(sizes[v.upper()] for v in sh.grid - query)
    keys = _decode_keys(sh, prog)
    e = m.elem_bytes
    words = sh.whole.tensor_words
    kv = sum(words[t] for t in lay.streamed) * keys / sizes[lay.key_rank]
    qo = sum(words[t] for t in cascade.inputs if t not in lay.streamed and t not in case.density)
    qo += sum(words[t] for t in cascade.outputs)
    partial = sum(words[t] for t in cascade.outputs) * 4
    useful = _useful(sh, prog)
    compulsory = sum(words[t] for t in (*cascade.inputs, *cascade.outputs)) * e
    splits = math.prod(sizes[p] for p in lay.split_parts)
    pred = decode_kernel(m, rows=rows, groups=groups, keys=keys, head_dim=prog.width, kv_bytes=kv * e,
                         qo_bytes=qo * e, partial_bytes=partial, flops=useful["tensor"], exp_ops=useful["sfu"],
                         compulsory_bytes=compulsory, splits=(splits,))  # fmt: skip
    kind = "split-K decode" if lay.split_parts else "decode"
    notes = (f"cascade {case.name}: {kind} kernel, {rows} query rows per K/V group, {keys} keys, split {splits}",
             *_param_notes(case))  # fmt: skip
    return replace(pred, kernel=f"decode:{case.name}", notes=(*pred.notes, *notes))


def _decode_keys(sh: _Shape, prog: _Program) -> int:
    """The most keys one query row visits: the tile count at one row and one key per tile."""
    most = 0
    for p in range(len(prog.pops)):
        if prog.tile_einsums[p]:
            for c in _tiles(sh, prog, p, 1, 1):
                most = max(most, int(np.ceil(c.visited.max())))
    return most or sh.sizes[sh.lay.key_rank]


# ------------------------------------------------------------------------------------- the unfused chain


def _mask_einsum(cascade: Cascade, name: str) -> tuple[str, ...] | None:
    """The variables of the index conditions of an Einsum that only masks (a ``where`` with a constant branch,
    no reduction), or None."""
    e = cascade.einsum_by_name[name]
    if e.reduce_op is not None or not e.conditions:
        return None
    calls = [n for n in walk(e.stmt.expr) if isinstance(n, Call) and n.func == "where"]
    if not any(_constant(a) for c in calls for a in c.args[1:]):
        return None
    out = [v.name for cond in e.conditions for side in (cond.left, cond.right) for v in index_vars(side)]
    return tuple(dict.fromkeys(out))


def _constant(node: Any) -> bool:
    return isinstance(node, Number) or (isinstance(node, Neg) and _constant(node.operand))


def _predict_unfused(m: Machine, sh: _Shape) -> KernelPrediction:
    """The unfused chain derived from the cascade (module docstring)."""
    case, whole = sh.case, sh.whole
    cascade = case.cascade
    e = m.elem_bytes
    words = whole.tensor_words
    einsums = list(whole.einsums)
    gemms = [i for i, x in enumerate(einsums) if "mac" in x.ops_per_point]
    held = 0.0  # intermediates handed between kernels, all in DRAM at once at worst
    parts: list[KernelPrediction] = []
    kernels: list[tuple[str, list]] = []  # ("gemm" | "stream" | "mask", Einsums)
    run: list = []
    for i, x in enumerate(einsums):
        if i in gemms:
            if run:
                kernels.append(("stream", run))
                run = []
            kernels.append(("gemm", [x]))
        elif _mask_einsum(cascade, x.name) is not None:
            if run:
                kernels.append(("stream", run))
                run = []
            kernels.append(("mask", [x]))
        else:
            run.append(x)
    if run:
        last_gemm = next((k for k in reversed(kernels) if k[0] == "gemm"), None)
        space = set(_out(last_gemm[1][0])) if last_gemm else set()
        if last_gemm and kernels[-1] is last_gemm and all(set(x.vars) <= space for x in run):
            kernels[-1] = ("gemm", [*last_gemm[1], *run])  # the map runs in the GEMM's epilogue
        else:
            kernels.append(("stream", run))
    owner = {x.name: i for i, (_, xs) in enumerate(kernels) for x in xs}
    for i, (kind, xs) in enumerate(kernels):
        names = {x.name for x in xs}
        reads = {t for x in xs for t in x.inputs if t not in names}
        writes = {x.name for x in xs if x.name in cascade.outputs or any(
            owner.get(c) != i for c in whole.consumers.get(x.name, ()))}  # fmt: skip
        held += sum(words[t] for t in writes if t not in cascade.outputs) * e
        if kind == "gemm":
            parts.append(_gemm(m, xs[0], whole))
        elif kind == "mask":
            x = xs[0]
            plane = math.prod(sh.sizes[v.upper()] for v in _mask_einsum(cascade, x.name) or ())
            data = sum(words[t] for t in reads)
            parts.append(predict_elementwise(m, elements=int(words[x.name]), reads=2, kernel=f"mask:{x.name}",
                                             read_bytes=e * data / words[x.name] + e * plane / words[x.name],
                                             broadcast=True))  # fmt: skip
        else:
            ops: dict[str, float] = {}
            for x in xs:
                _add(ops, _units(x.ops()))
            reducing = [x for x in xs if x.points > words[x.name]]  # row reductions (max, sum over the keys)
            widest = max(reducing or xs, key=lambda x: x.points)
            cols = widest.points // words[widest.name]
            parts.append(predict_rowwise(m, kernel="rowwise:" + "+".join(x.name for x in xs),
                                         rows=words[widest.name] if reducing else widest.points, cols=cols,
                                         read_bytes=sum(words[t] for t in reads) * e,
                                         write_bytes=sum(words[t] for t in writes) * e, sfu_ops=ops["sfu"],
                                         fma_ops=ops["fma"], reduces=bool(reducing)))  # fmt: skip
    need(
        held <= m.spec.dram_bytes,
        f"unfused:{case.name}: the intermediates handed between its kernels need {held / 1e9:.1f} GB; "
        f"{m.spec.id} has {m.spec.dram_bytes / 1e9:.1f} GB (dram_bytes)",
    )
    useful = {"tensor": 0.0, "sfu": 0.0, "fma": 0.0}
    for name in cascade.einsum_by_name:
        _add(useful, _units({k: v for k, v in sh.effective[name].items() if UNIT_OF_OP.get(k) in ("tensor", "sfu")}))
    compulsory = sum(words[t] for t in (*cascade.inputs, *cascade.outputs)) * e
    time_s = sum(p.time_s for p in parts)
    slowest = max(parts, key=lambda p: p.time_s)
    totals: dict[str, float] = {}
    for p in parts:  # time by the ceiling that bound each kernel
        totals[p.bound] = totals.get(p.bound, 0.0) + p.time_s
    notes = (f"cascade {case.name}: unfused chain of {len(parts)} kernels ({', '.join(p.kernel for p in parts)})",
             *_param_notes(case))  # fmt: skip
    pred = finish(m, op="sdpa", kernel=f"unfused:{case.name}", flops=useful["tensor"],
                  hbm_bytes=sum(p.hbm_bytes for p in parts), times={slowest.bound: time_s - m.launch_s},
                  tiles={"kernels": len(parts)}, compulsory_bytes=compulsory, exp_ops=useful["sfu"],
                  notes=notes)  # fmt: skip
    return replace(pred, parts=tuple(parts), times_s=totals)


def _gemm(m: Machine, x, whole: LoweredCascade) -> KernelPrediction:
    """A contraction as a batched GEMM: the first operand's own free variables are the rows, the second's the
    columns, the variables both index and the output keeps the batch, the reduced ones K."""
    operands = [t for t in x.tensors[1:]]
    need(len(operands) == 2, f"unfused: {x.name} contracts {len(operands)} tensors; a GEMM takes two")
    out = set(_out(x))
    index = {t: {v for j, v in enumerate(x.vars) if x.incidence[x.tensors.index(t), j]} for t in operands}
    a, b = index[operands[0]], index[operands[1]]
    size = {v: int(x.var_sizes[j]) for j, v in enumerate(x.vars)}

    def prod(vs) -> int:
        return math.prod(size[v] for v in vs)

    batch = prod(out & a & b)
    return replace(predict_gemm(m, m_=prod((out & a) - b), n=prod((out & b) - a), k=prod(set(x.vars) - out),
                                batch=batch), kernel=f"gemm:{x.name}")  # fmt: skip


# ------------------------------------------------------------------------------------------- entry points


def kernel_for(case: Any) -> str:
    """The kernel a case's structure gives (module docstring): ``fused``, ``decode`` or ``unfused``."""
    lay = _layout(case.cascade)
    if lay.split_parts:
        return "decode"
    if lay.passes > 1:
        return "unfused"
    sh = _shape(case)
    rows = math.prod(case.sizes[v.upper()] for v in lay.query_vars)
    if rows <= DECODE_QUERIES and case.sizes[lay.key_rank] >= DECODE_KEYS and len(_program_of(sh, 64, 64).pops) == 1:
        return "decode"
    return "fused"


def predict_case(
    device: str | DeviceSpec,
    case: Any,
    *,
    dtype: str = "bf16",
    kernel: str | None = None,
    tile: tuple[int, int] | None = None,
) -> KernelPrediction:
    """Predict a :class:`workloads.cases.Case` on a GPU (module docstring).

    ``kernel``: ``fa2`` or ``fa3`` (the fused kernel of a one-pass cascade; default fa3 on Hopper, else fa2),
    ``decode`` (a one-pass cascade, or a split-K one) or ``unfused`` (a multi-pass cascade); by default the
    kernel the case's structure gives. ``tile``: the fused kernel's (Br, Bc), fixed (default: the fastest).
    """
    spec = load_device(device)
    own = kernel_for(case)
    lay = _layout(case.cascade)
    allowed = {"fused": (*FUSED, "decode"), "decode": ("decode", *(() if lay.split_parts else FUSED)),
               "unfused": ("unfused",)}[own]  # fmt: skip
    if kernel is not None and kernel not in allowed:
        why = {"fused": "one-pass", "decode": "split-K" if lay.split_parts else "one-pass", "unfused": "multi-pass"}
        raise SpecError(
            f"{case.name}: a {why[own]} cascade runs kernel {' or '.join(allowed)}, not {kernel!r} "
            f"({lay.passes} pass(es) over {lay.key_rank}" + (f", split by {', '.join(lay.split_parts)})" if
                                                              lay.split_parts else ")")
        )  # fmt: skip
    sh = _shape(case)
    held = sum(sh.whole.tensor_words[t] for t in (*case.cascade.inputs, *case.cascade.outputs))
    if dtype in DTYPE_BYTES and held * DTYPE_BYTES[dtype] > spec.dram_bytes:  # checked before any work
        raise SpecError(
            f"{case.name}: its inputs and outputs take {held * DTYPE_BYTES[dtype] / 2**30:.4g} GiB in {dtype}, more "
            f"than {spec.name}'s {spec.dram_bytes / 2**30:.4g} GiB of DRAM; give a smaller shape"
        )
    if kernel == "decode" and own == "fused" and len(_program_of(sh, 64, 64).pops) > 1:
        raise SpecError(f"{case.name}: the decode kernel runs one CTA population; this cascade has several")
    if kernel == "decode" or (kernel is None and own == "decode"):
        return _predict_decode(machine(spec, dtype), sh)
    if own == "unfused":
        return _predict_unfused(machine(spec, dtype), sh)
    flavour = kernel or ("fa3" if spec.tensor_instruction == "wgmma" else "fa2")
    return _predict_fused(machine(spec, dtype, legacy_mma=flavour == "fa2"), flavour, sh, tile)


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
    """A registered cascade (or ``.einsum`` file) at an attention shape: :func:`workloads.cases.make_case`, then
    :func:`predict_case`. ``seq_kv`` defaults to ``seq_q``; ``kv_heads`` binds the cascade's K/V-head rank
    ``G`` (a cascade without one fixes its K/V heads); ``params`` are the case's parameters."""
    from workloads.cases import load_workload, make_case

    what = f"variant {name}"
    for key, value in (("batch", batch), ("heads", heads), ("seq_q", seq_q), ("head_dim", head_dim),
                       ("seq_kv", seq_kv), ("kv_heads", kv_heads)):  # fmt: skip
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpecError(f"{what}: {key} must be a positive integer, got {value!r}")
    w = load_workload(name)
    ranks = set(w.cascade.ranks)
    shape = {"B": batch, "H": heads, "P": seq_q, "M": seq_q if seq_kv is None else seq_kv, "E": head_dim,
             "F": head_dim}  # fmt: skip
    if kv_heads is not None:
        if "G" in ranks:
            shape["G"] = kv_heads
        elif kv_heads != heads:
            raise SpecError(
                f"{what}: its cascade has no K/V-head rank G, so kv_heads={kv_heads} cannot apply (its K/V heads "
                "are fixed by the cascade)"
            )
    case = make_case(w, {k: v for k, v in shape.items() if k in ranks}, params=params)
    return predict_case(device, case, dtype=dtype, kernel=kernel)
