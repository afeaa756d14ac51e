"""A case: one cascade at one shape with its parameters: what every mapper, on every target, costs.

A cascade comes from the registry (by name) or from a ``.einsum`` file (by path). Its **parameters are its
sizes**: a window, a sink count, a block, a split count are ranks (size-only ranks of a mask condition such
as ``W``, or parts of a partition such as ``M0``), and the text declares their defaults (``param W = 4096``);
an input mask declares the fraction of nonzeros it keeps (``density BM = 0.25``). Nothing here knows a
variant by name. Parameters may be given by rank (``W=128``) or by the conventional words of
:data:`PARAMETERS` (``window=128``), which a cascade takes when it has that rank.

Model shapes bind to a cascade by the conventions every registered cascade follows: ``B`` batch, ``H`` query
heads (``H = G * R`` with ``G`` the K/V heads when the cascade has a ``G`` rank; a second query-head rank
``HS`` takes the share ``1 - retrieval_fraction`` of the heads), ``P`` queries, ``M`` keys, ``E``/``F`` head
dims. A cascade that declares its query count (``param P = 1``) is a decode step: it keeps it.

>>> case = make_case("sliding-window", {"M": 8192}, params={"window": 1024})
>>> case.sizes["W"], case.seq_q, case.kv_heads
(1024, 8192, 8)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from einsum.cascade import Cascade
from einsum.errors import AttnscopeError, ShapeError
from workloads.registry import CASCADES, CascadeEntry, get_cascade, parse_size

__all__ = ["PARAMETERS", "Case", "accepted", "case_for_model", "case_for_shape", "load_workload", "make_case",
           "parse_params"]  # fmt: skip

PARAMETERS: Mapping[str, str] = {
    "window": "W",
    "sinks": "SINK",
    "local_blocks": "LOCAL",
    "block": "M0",
    "splits": "S",
    "shards": "N",
    "latent": "L",
    "rope": "ER",
}
"""Conventional parameter words -> the rank that carries them (a cascade takes a word when it has the rank).
Two more words are not sizes: ``density`` (every declared input mask's fraction of nonzeros) and
``retrieval_fraction`` (the share of query heads in ``H`` when a cascade has a second query-head rank ``HS``)."""

_HEAD_RANKS = ("H", "G", "R", "HS", "HG", "HN")


@dataclass(frozen=True)
class Workload:
    """A cascade from the registry or a file, and what it is."""

    name: str
    cascade: Cascade
    summary: str
    source: str
    entry: CascadeEntry | None = field(default=None, repr=False)

    def sizes(self, given: Mapping[str, int] | None = None) -> dict[str, int]:
        """Complete sizes: the registry's defaults for registered cascades, the text's declared ones for all,
        and for a file's partition that nothing sizes the registry's tile rule (:func:`free_parts`)."""
        if self.entry is not None:
            return self.entry.sizes(given)
        return self.cascade.rank_sizes(free_parts(self.cascade, dict(given or {})))


TILE = 256
"""The innermost part of a partition nothing sizes takes the largest divisor of its rank up to this (the
registry's ``M0 = min(256, M)``, the FuseMax study's tile); a mapper may re-tile it."""


def free_parts(cascade: Cascade, given: dict[str, int]) -> dict[str, int]:
    """Sizes for partitions of given ranks whose parts neither the shape nor a ``param`` sizes: the innermost
    part the largest divisor up to :data:`TILE`, the middle parts 1, the outermost the rest."""
    out = dict(given)
    for parent, parts in cascade.partitions.items():
        if parent not in out or any(p in out or p in cascade.params for p in parts):
            continue
        size = out[parent]
        out[parts[-1]] = max(d for d in range(1, min(TILE, size) + 1) if size % d == 0)
        out.update(dict.fromkeys(parts[1:-1], 1))
    return out


def load_workload(name_or_path: str | Workload) -> Workload:
    """A registered cascade by name, or a cascade text file (``.einsum``) by path."""
    if isinstance(name_or_path, Workload):
        return name_or_path
    path = Path(name_or_path)
    if name_or_path in CASCADES or not (path.suffix or path.exists()):
        entry = get_cascade(name_or_path)
        return Workload(entry.name, entry.cascade, entry.summary, entry.source, entry)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AttnscopeError(
            f"cannot read cascade file {name_or_path}: {exc.strerror}; give a registered name "
            f"({', '.join(sorted(CASCADES))}) or a readable .einsum file"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AttnscopeError(
            f"{name_or_path}: not a cascade text file (byte {exc.start} is not UTF-8); a .einsum file is text"
        ) from None
    cascade = Cascade.from_text(text, name=path.stem, origin=str(path))
    return Workload(path.stem, cascade, _first_comment(text), str(path), None)


def _first_comment(text: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith("#"):
            return line.strip().lstrip("#").strip()
    return ""


@dataclass(frozen=True)
class Case:
    """A cascade at complete sizes with its mask densities. Sizes are elements (ranks) or tokens (windows)."""

    name: str
    """The registered name or the file's stem."""
    cascade: Cascade = field(repr=False)
    sizes: Mapping[str, int]
    """Every rank's size, size-only ranks (a window ``W``) included."""
    density: Mapping[str, float]
    """Input mask -> expected fraction of nonzeros (declared in the text, or given)."""
    source: str = ""
    summary: str = ""

    @property
    def batch(self) -> int:
        return self.sizes.get("B", 1)

    @property
    def seq_q(self) -> int:
        """Queries (``P``)."""
        return self.sizes.get("P", 1)

    @property
    def seq_kv(self) -> int:
        """Keys (``M``)."""
        return self.sizes.get("M", 1)

    @property
    def heads(self) -> int:
        """Query heads: ``H`` plus a second population ``HS`` where the cascade has one."""
        return self.sizes.get("H", 1) + self.sizes.get("HS", 0)

    @property
    def head_dim(self) -> int:
        return self.sizes.get("E", self.sizes.get("F", 1))

    @property
    def kv_heads(self) -> int:
        """K/V heads: over the inputs read at key positions, the product of the head ranks each reads, summed
        over the distinct head-rank sets (MQA's and MLA's shared K/V: 1; DuoAttention's two kinds: H + HS)."""
        key = {"M", *self.cascade.children("M")}
        seen: set[tuple[str, ...]] = set()
        for name in self.cascade.inputs:
            ranks = self.cascade.tensors[name].ranks
            if key & set(ranks) and not self.density.get(name):
                seen.add(tuple(r for r in ranks if r in _HEAD_RANKS))
        return sum(math.prod(self.sizes[r] for r in heads) for heads in seen) or 1

    @property
    def params(self) -> dict[str, float]:
        """The parameters this case has, by conventional word where there is one: the sizes its text declares
        (a decode step's query count aside), its split, shard and latent ranks, its mask densities and its
        head mix."""
        words = {rank: word for word, rank in PARAMETERS.items()}
        ranks = [r for r in self.cascade.params if r != "P"] + [r for r in ("S", "N", "L", "ER") if r in self.sizes]
        out: dict[str, float] = {words.get(r, r): self.sizes[r] for r in dict.fromkeys(ranks)}
        out.update({f"density:{t}" if len(self.density) > 1 else "density": d for t, d in self.density.items()})
        if "HS" in self.sizes:
            out["retrieval_fraction"] = self.sizes["H"] / self.heads
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.name, "shape": dict(self.sizes), "density": dict(self.density)}


def accepted(workload: str | Workload, key: str) -> bool:
    """Whether a cascade takes a parameter (a word of :data:`PARAMETERS` or a rank it has, ``density`` where
    it declares a mask, ``retrieval_fraction`` where it has a second query-head rank ``HS``)."""
    c = load_workload(workload).cascade
    if key == "density":
        return bool(c.densities)
    if key == "retrieval_fraction":
        return "HS" in c.ranks
    return PARAMETERS.get(key, key) in c.ranks


def make_case(
    workload: str | Workload,
    shape: Mapping[str, int] | None = None,
    *,
    params: Mapping[str, float] | None = None,
) -> Case:
    """A case from a workload, rank sizes and parameters (module docstring). Unknown names are errors."""
    w = load_workload(workload)
    given = dict(shape or {})
    params = dict(params or {})
    if not isinstance(params, dict):
        raise ShapeError(f"{w.name}: parameters are a mapping of name to value, got {params!r}")
    density = dict(w.cascade.densities)
    fraction = params.pop("retrieval_fraction", None)
    for key, value in params.items():
        if key == "density" or key.startswith("density:"):
            masks = list(w.cascade.densities) if key == "density" else [key.partition(":")[2]]
            bad = [m for m in masks if m not in w.cascade.densities]
            if not masks or bad:
                raise ShapeError(
                    f"{w.name}: takes no {key!r}: only an input mask the cascade declares (density NAME = d) has "
                    f"one; it declares {', '.join(w.cascade.densities) or 'none'}"
                )
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
                raise ShapeError(f"{w.name}: {key} must be a fraction in (0, 1], got {value!r}")
            density.update(dict.fromkeys(masks, float(value)))
            continue
        rank = PARAMETERS.get(key, key)
        if rank not in w.cascade.ranks:
            takes = [wd for wd, r in PARAMETERS.items() if r in w.cascade.ranks] + (
                ["density"] if w.cascade.densities else []
            )
            raise ShapeError(
                f"{w.name}: unknown parameter {key!r}; it takes {', '.join(takes) or 'none'} "
                f"(or any of its ranks {', '.join(w.cascade.ranks)})"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 1:
            raise ShapeError(f"{w.name}: parameter {key} must be a positive integer, got {value!r}")
        if rank in given and given[rank] != int(value):
            raise ShapeError(f"{w.name}: {key} = {value:g} contradicts the shape's {rank} = {given[rank]}")
        given[rank] = int(value)
    if fraction is not None or ("HS" in w.cascade.ranks and "H" in given and "HS" not in given):
        given = _split_heads(w, given, fraction)
    sizes = w.sizes(given)
    return Case(w.name, w.cascade, sizes, density, w.source, w.summary)


def _split_heads(w: Workload, given: dict[str, int], fraction: float | None) -> dict[str, int]:
    """``H`` query heads in all, split between the ranks ``H`` and ``HS`` by ``retrieval_fraction``."""
    if "HS" not in w.cascade.ranks:
        raise ShapeError(f"{w.name}: takes no retrieval_fraction: it has one kind of query head (no rank HS)")
    if fraction is None:
        base = w.entry.base_sizes if w.entry else {}
        fraction = base["H"] / (base["H"] + base["HS"]) if {"H", "HS"} <= set(base) else 0.5
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ShapeError(f"{w.name}: retrieval_fraction must be a number in (0, 1], got {fraction!r}")
    total = given.get("H", 0) + given.get("HS", 0)
    if total < 2:
        raise ShapeError(f"{w.name}: needs at least 2 heads (retrieval and streaming), got {total}")
    retrieval = min(total - 1, max(1, round(total * fraction)))
    return {**given, "H": retrieval, "HS": total - retrieval}


def case_for_model(
    workload: str | Workload,
    *,
    batch: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    seq: int,
    seq_q: int | None = None,
    params: Mapping[str, float] | None = None,
    head_dim_v: int | None = None,
) -> Case:
    """A case at a model's attention shape and one sequence length (module docstring): prefill ``P = M = seq``
    (``seq_q``: another query count, e.g. 1 for a decode step of a prefill cascade); a cascade that declares
    its query count (decode) keeps it against ``M = seq`` keys. K/V heads bind to ``G`` where the cascade has
    one; elsewhere the cascade's text fixes them. ``head_dim_v``: the value head dim F where it differs from the
    query/key head dim E (MLA)."""
    w = load_workload(workload)
    ranks = set(w.cascade.ranks)
    given = {"B": batch, "H": heads, "M": seq, "E": head_dim, "F": head_dim if head_dim_v is None else head_dim_v}
    if "P" not in w.cascade.params:
        given["P"] = seq if seq_q is None else seq_q
    if "G" in ranks:
        given["G"] = kv_heads
    return make_case(w, {k: v for k, v in given.items() if k in ranks}, params=params)


def case_for_shape(
    workload: str | Workload,
    shape: Any,
    *,
    batch: int,
    seq: int,
    seq_q: int | None = None,
    params: Mapping[str, float] | None = None,
) -> Case:
    """:func:`case_for_model` at a zoo model's attention shape (a :class:`workloads.model_shape.ModelShape`): its
    heads, K/V heads and head dims; for an MLA model, a cascade with latent and rope ranks (``L``, ``ER``: ``mla``,
    ``mla-expanded``) takes the model's latent and rope sizes and its nope head dim as ``E`` (unless ``params``
    set them), every other cascade its q/k head dim (nope + rope) as ``E`` and its value head dim as ``F``."""
    w = load_workload(workload)
    params = dict(params or {})
    head_dim = shape.head_dim
    if shape.mla is not None and {"L", "ER"} <= set(w.cascade.ranks):
        head_dim = shape.mla.qk_nope_head_dim
        params = {"latent": shape.mla.kv_lora_rank, "rope": shape.mla.qk_rope_head_dim, **params}
    return case_for_model(w, batch=batch, heads=shape.heads, kv_heads=shape.kv_heads, head_dim=head_dim,
                          head_dim_v=shape.v_head_dim, seq=seq, seq_q=seq_q, params=params)  # fmt: skip


def parse_params(text: str) -> dict[str, float]:
    """``window=1024,density=0.1`` -> {"window": 1024, "density": 0.1} (K/M suffixes allowed on integers)."""
    out: dict[str, float] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ShapeError(f"parameter {item!r} is not NAME=VALUE (e.g. window=1024,density=0.1)")
        if key in out:
            raise ShapeError(f"parameter {key} is given twice")
        try:
            out[key] = float(value) if any(c in value for c in ".eE") else parse_size(value, f"parameter {key}")
        except ValueError:
            raise ShapeError(f"parameter {key}={value!r}: expected a number") from None
    return out
