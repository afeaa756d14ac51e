"""Lowering: a cascade at given rank sizes as plain data for the cost model (no hardware knowledge).

For each Einsum: its iteration variables and their sizes, every tensor it touches with the variables that
index it (``incidence``), and its operations per iteration point by kind. A ``mul`` whose products feed a
``sum`` reduction is reported as one ``mac`` (the multiply-accumulate a PE performs), so
``QK[m,p] = sum[e] Q[e,p]*K[e,m]`` is one ``mac`` per point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

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
        return int(self.var_sizes[self.vars.index(var)])

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
        for e in self.einsums:
            if e.name == name:
                return e
        raise KeyError(name)


def lower(cascade: Cascade, sizes: Mapping[str, int]) -> LoweredCascade:
    """Bind sizes and lower every Einsum."""
    full = cascade.rank_sizes(sizes)
    lowered = tuple(_lower_einsum(e, full) for e in cascade.einsums)
    consumers: dict[str, list[str]] = {}
    for e in cascade.einsums:
        for t in e.inputs:
            if e.name not in consumers.setdefault(t, []):
                consumers[t].append(e.name)
    return LoweredCascade(
        name=cascade.name,
        sizes=full,
        einsums=lowered,
        tensor_words={n: math.prod(t.shape(full)) for n, t in cascade.tensors.items()},
        inputs=cascade.inputs,
        outputs=cascade.outputs,
        producer={e.name: e.name for e in cascade.einsums},
        consumers={t: tuple(c) for t, c in consumers.items()},
    )


def _lower_einsum(e: Einsum, sizes: Mapping[str, int]) -> LoweredEinsum:
    ranks = e.iter_vars
    tensors = (e.name, *e.inputs)
    incidence = np.zeros((len(tensors), len(ranks)), dtype=bool)
    accesses = {e.name: [e.stmt.output]} | {t: [a for a in e.reads if a.tensor == t] for t in e.inputs}
    for ti, t in enumerate(tensors):
        for acc in accesses[t]:
            for idx in acc.indices:
                for v in index_vars(idx):
                    incidence[ti, ranks.index(v.name)] = True
    one = {v.upper(): 1 for v in ranks}
    per_point = einsum_ops(e, {**sizes, **one})
    if e.reduce_op == "sum" and isinstance(e.stmt.expr, BinOp) and e.stmt.expr.op == "*":
        per_point["mul"] -= 1
        per_point["add"] -= 1
        per_point["mac"] = per_point.get("mac", 0) + 1
    var_sizes = np.array([sizes[v.upper()] for v in ranks], dtype=np.int64)
    return LoweredEinsum(
        name=e.name,
        text=e.text,
        vars=ranks,
        var_sizes=var_sizes,
        tensors=tensors,
        incidence=incidence,
        is_output=np.array([i == 0 for i in range(len(tensors))]),
        ops_per_point={k: v for k, v in per_point.items() if v},
        points=int(np.prod(var_sizes, dtype=object)),
    )
