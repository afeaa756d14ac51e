"""Lowering: a cascade at given rank sizes as plain data for the cost model (no hardware knowledge).

For each Einsum: its iteration variables and their sizes, every tensor it touches with the variables that
index it (``incidence``), and its operations per iteration point by kind. A ``mul`` whose products feed a
``sum`` reduction is reported as one ``mac`` (the multiply-accumulate a PE performs), so
``QK[m,p] = sum[e] Q[e,p]*K[e,m]`` is one ``mac`` per point. Every operator node counts at every point here
(the loop nest as written): a loop-invariant subexpression (``exp(B[p])`` in ``Y[m,p] = A[m,p] * exp(B[p])``)
that :func:`einsum.analysis.op_counts` counts once per point of its own variables is hoisted only if a
mapping does so.

Indices may be any affine expression the cascade accepts (``m1*M0+m0``, ``m1*M0+M0-1``): ``incidence`` marks
the variables an index uses, so ``BK[b,h,m1*M0+M0-1]`` is indexed by b, h and m1 (one key per block).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from einsum.analysis import einsum_ops
from einsum.ast import BinOp, index_vars
from einsum.cascade import Cascade, Einsum


@dataclass(frozen=True, eq=False)
class LoweredEinsum:
    """One Einsum as arrays: variables (the nest's ranks), tensors, incidence and ops per point."""

    name: str
    text: str
    vars: tuple[str, ...]
    var_sizes: np.ndarray  # int64[R]
    tensors: tuple[str, ...]  # the output first, then the inputs in textual order
    incidence: np.ndarray  # bool[T, R]: variable r indexes tensor t
    is_output: np.ndarray  # bool[T]
    ops_per_point: Mapping[str, int]  # op kind -> count per iteration point (mac fused)
    points: int

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.tensors[1:]

    def var_size(self, var: str) -> int:
        size = self._sizes_by_var.get(var)
        return int(self.var_sizes[self.vars.index(var)]) if size is None else size

    @cached_property
    def _sizes_by_var(self) -> dict[str, int]:
        return {v: int(n) for v, n in zip(self.vars, self.var_sizes, strict=True)}

    def ops(self) -> dict[str, int]:
        """Total operations by kind."""
        return {k: v * self.points for k, v in self.ops_per_point.items()}


@dataclass(frozen=True, eq=False)
class LoweredCascade:
    """A cascade at fixed sizes: its Einsums in dataflow order and every tensor's size in words."""

    name: str
    sizes: Mapping[str, int]
    einsums: tuple[LoweredEinsum, ...]
    tensor_words: Mapping[str, int]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    producer: Mapping[str, str]  # tensor -> Einsum that writes it
    consumers: Mapping[str, tuple[str, ...]]  # tensor -> Einsums that read it, in dataflow order

    def einsum(self, name: str) -> LoweredEinsum:
        e = self._by_name.get(name)
        if e is None:
            raise KeyError(name)
        return e

    @cached_property
    def _by_name(self) -> dict[str, LoweredEinsum]:
        by_name: dict[str, LoweredEinsum] = {}
        for e in self.einsums:
            by_name.setdefault(e.name, e)
        return by_name


def lower(cascade: Cascade, sizes: Mapping[str, int]) -> LoweredCascade:
    """Bind sizes and lower every Einsum."""
    full = cascade.rank_sizes(sizes)
    static = _static(cascade)
    lowered = tuple(
        _lowered_einsum(cascade, i, tuple(full[v.upper()] for v in e.iter_vars)) for i, e in enumerate(cascade.einsums)
    )
    return LoweredCascade(
        name=cascade.name,
        sizes=full,
        einsums=lowered,
        tensor_words={n: math.prod(t.shape(full)) for n, t in cascade.tensors.items()},
        inputs=cascade.inputs,
        outputs=cascade.outputs,
        producer=dict(static.producer),
        consumers=dict(static.consumers),
    )


@dataclass(frozen=True)
class _Static:
    """What a lowering takes from the cascade whatever the sizes."""

    producer: Mapping[str, str]
    consumers: Mapping[str, tuple[str, ...]]
    einsums: tuple[tuple[np.ndarray, np.ndarray, Mapping[str, int]], ...] = field(repr=False)
    # per Einsum: incidence, is_output, ops per point (mac fused)


@lru_cache(maxsize=512)
def _static(cascade: Cascade) -> _Static:
    """The size-independent part of :func:`lower`, keyed on the cascade (by identity)."""
    consumers: dict[str, list[str]] = {}
    for e in cascade.einsums:
        for t in e.inputs:
            if e.name not in consumers.setdefault(t, []):
                consumers[t].append(e.name)
    return _Static(
        producer={e.name: e.name for e in cascade.einsums},
        consumers={t: tuple(c) for t, c in consumers.items()},
        einsums=tuple(_einsum_static(e) for e in cascade.einsums),
    )


def _lowered_einsum(cascade: Cascade, index: int, sizes: tuple[int, ...]) -> LoweredEinsum:
    """Einsum ``index`` of the cascade lowered with its iteration variables at ``sizes``. Lowerings share it (it and
    its arrays are read-only) where the statement (its text, which fixes all the rest) and those sizes agree, in
    one cascade or several: costs memoized per lowered Einsum (:func:`simulator.cost.einsum_nest`) then serve
    them all."""
    e = cascade.einsums[index]
    key = (e.name, e.text, e.iter_vars, e.inputs, sizes)
    lowered = _LOWERED.pop(key, None)
    if lowered is None:
        lowered = _lower_statement(cascade, index, sizes)
        if len(_LOWERED) >= _LOWERED_SIZE:
            _LOWERED.pop(next(iter(_LOWERED)))
    _LOWERED[key] = lowered  # the most recent last
    return lowered


_LOWERED: dict[tuple, LoweredEinsum] = {}
_LOWERED_SIZE = 8192


def _lower_statement(cascade: Cascade, index: int, sizes: tuple[int, ...]) -> LoweredEinsum:
    e = cascade.einsums[index]
    incidence, is_output, per_point = _static(cascade).einsums[index]
    var_sizes = np.array(sizes, dtype=np.int64)
    var_sizes.flags.writeable = False
    return LoweredEinsum(
        name=e.name,
        text=e.text,
        vars=e.iter_vars,
        var_sizes=var_sizes,
        tensors=(e.name, *e.inputs),
        incidence=incidence,
        is_output=is_output,
        ops_per_point=dict(per_point),
        points=int(np.prod(var_sizes, dtype=object)),
    )


def _einsum_static(e: Einsum) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """An Einsum's incidence (read-only), output flags (read-only) and operations per point (mac fused)."""
    ranks = e.iter_vars
    tensors = (e.name, *e.inputs)
    incidence = np.zeros((len(tensors), len(ranks)), dtype=bool)
    accesses = {e.name: [e.stmt.output]} | {t: [a for a in e.reads if a.tensor == t] for t in e.inputs}
    for ti, t in enumerate(tensors):
        for acc in accesses[t]:
            for idx in acc.indices:
                for v in index_vars(idx):
                    incidence[ti, ranks.index(v.name)] = True
    per_point = einsum_ops(e, {v.upper(): 1 for v in ranks})
    if e.reduce_op == "sum" and isinstance(e.stmt.expr, BinOp) and e.stmt.expr.op == "*":
        per_point["mul"] -= 1
        per_point["add"] -= 1
        per_point["mac"] = per_point.get("mac", 0) + 1
    is_output = np.array([i == 0 for i in range(len(tensors))])
    incidence.flags.writeable = False
    is_output.flags.writeable = False
    return incidence, is_output, {k: v for k, v in per_point.items() if v}
