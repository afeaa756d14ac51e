"""The numpy reference interpreter: the semantics of a cascade, executed densely in float64.

Each Einsum is evaluated over its whole iteration space at once (numpy broadcasting over one axis per
variable); recurrences run step by step over their iterative rank, with every Einsum of the recurrence
evaluated for that step. Reductions start from the operator's identity (0 for sum, -inf for max, +inf for
min). The interpreter is the oracle for every other part of attnscope, not a fast path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import networkx as nx
import numpy as np

from einsum.ast import Access, BinOp, Compare, Expr, Neg, Number
from einsum.cascade import Cascade, Einsum, bind_index
from einsum.errors import ShapeError

BINARY_OPS = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}
"""The map actions, as numpy ufuncs (the semantics every analysis that evaluates a constant shares)."""
FUNCTIONS = {
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "relu": lambda x: np.maximum(x, 0.0),
    "max": np.maximum,
    "min": np.minimum,
}
_COMPARE = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}
_REDUCE = {"sum": np.sum, "max": np.max, "min": np.min}


def random_inputs(cascade: Cascade, sizes: Mapping[str, int], seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    """Standard-normal inputs for every input tensor, drawn in declaration order from ``seed``."""
    full = cascade.rank_sizes(sizes)
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(cascade.tensors[name].shape(full)).astype(dtype) for name in cascade.inputs}


def run(
    cascade: Cascade,
    sizes: Mapping[str, int],
    inputs: Mapping[str, np.ndarray],
    keep_intermediates: bool = False,
) -> dict[str, np.ndarray]:
    """Execute a cascade; returns its outputs (and every intermediate when ``keep_intermediates``).

    ``sizes`` may leave out partition parts that can be derived (M0 given, M1 = M / M0). Inputs are arrays
    laid out in the ranks of their ``input`` declaration.
    """
    full = cascade.rank_sizes(sizes)
    _check_memory(cascade, full)
    values: dict[str, np.ndarray] = {}
    missing = [n for n in cascade.inputs if n not in inputs]
    if missing:
        raise ShapeError(f"{cascade.name}: missing input array(s) {', '.join(missing)}")
    extra = sorted(set(inputs) - set(cascade.inputs))
    if extra:
        raise ShapeError(
            f"{cascade.name}: unknown input(s) {', '.join(extra)}; its inputs are {', '.join(cascade.inputs)}"
        )
    for name in cascade.inputs:
        t = cascade.tensors[name]
        arr = np.asarray(inputs[name])
        expected = t.shape(full)
        if arr.shape != expected:
            dims = ", ".join(f"{r}={s}" for r, s in zip(t.ranks, expected, strict=True))
            raise ShapeError(f"{cascade.name}: input {name} has shape {arr.shape}; expected [{dims}]")
        if not np.issubdtype(arr.dtype, np.number):
            raise ShapeError(f"{cascade.name}: input {name} has non-numeric dtype {arr.dtype}")
        values[name] = arr.astype(np.float64, copy=False)
    for name, t in cascade.tensors.items():
        if t.role != "input":
            values[name] = np.zeros(t.shape(full))
            if t.iterative_dim is not None:
                index = [slice(None)] * len(t.ranks)
                index[t.iterative_dim] = 0
                values[name][tuple(index)] = t.init_value

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for group in _execution_groups(cascade):
            if len(group) == 1 and group[0].name not in cascade.recurrences:
                _evaluate(group[0], full, values, {})
                continue
            var = cascade.recurrences[group[0].name]
            for step in range(full[var.upper()]):
                for e in group:
                    _evaluate(e, full, values, {var: step})
    keep = cascade.tensors if keep_intermediates else cascade.outputs
    return {n: values[n] for n in keep if cascade.tensors[n].role != "input" or keep_intermediates}


LIVE_ARRAYS = 4
"""Iteration-space arrays one Einsum's evaluation holds at once (operands, a partial result, a mask): the
memory estimate's factor, so the estimate is of the right order rather than a bound."""


def memory_bytes(cascade: Cascade, full: Mapping[str, int]) -> tuple[float, float, str]:
    """(bytes of every tensor, bytes of the largest Einsum's evaluation, that Einsum) in float64.

    An Einsum is evaluated over its whole iteration space (one step of its recurrence at a time), with about
    :data:`LIVE_ARRAYS` arrays of that size alive.
    """
    tensors = sum(float(np.prod([full[r] for r in t.ranks], dtype=np.float64)) for t in cascade.tensors.values())
    largest, name = 0.0, ""
    for e in cascade.einsums:
        step = cascade.recurrences.get(e.name)
        points = float(np.prod([full[v.upper()] for v in e.iter_vars if v != step], dtype=np.float64))
        if points > largest:
            largest, name = points, e.name
    return tensors * 8, largest * 8 * LIVE_ARRAYS, name


def available_memory_bytes() -> float:
    """Memory this process may still take: MemAvailable of /proc/meminfo, else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def _check_memory(cascade: Cascade, full: Mapping[str, int]) -> None:
    """Refuse, before any work, a run that cannot fit in this machine's memory."""
    tensors, evaluation, name = memory_bytes(cascade, full)
    available = available_memory_bytes()
    if tensors + evaluation > available:
        gib = 2.0**30
        raise ShapeError(
            f"{cascade.name}: interpreting it at these sizes needs about {(tensors + evaluation) / gib:,.1f} GiB "
            f"(its tensors {tensors / gib:,.1f} GiB in float64; Einsum {name} evaluated over its iteration space "
            f"{evaluation / gib:,.1f} GiB), and {available / gib:,.1f} GiB is available; give smaller sizes"
        )


def _execution_groups(cascade: Cascade) -> list[list[Einsum]]:
    """Einsums grouped by recurrence, groups in dataflow order, members in DAG order."""
    condensed = nx.condensation(cascade.graph)
    position = {e.name: i for i, e in enumerate(cascade.einsums)}
    order = nx.lexicographical_topological_sort(
        condensed, key=lambda c: min(position[n] for n in condensed.nodes[c]["members"])
    )
    return [
        sorted((cascade.einsum_by_name[n] for n in condensed.nodes[c]["members"]), key=lambda e: position[e.name])
        for c in order
    ]


def _evaluate(e: Einsum, sizes: Mapping[str, int], values: dict[str, np.ndarray], fixed: Mapping[str, int]) -> None:
    """Evaluate one Einsum over its iteration space (``fixed`` pins variables to one value)."""
    nvars = len(e.iter_vars)
    grids: dict[str, np.ndarray] = {}
    for axis, var in enumerate(e.iter_vars):
        shape = [1] * nvars
        values_1d = np.array([fixed[var]]) if var in fixed else np.arange(sizes[var.upper()])
        shape[axis] = values_1d.size
        grids[var] = values_1d.reshape(shape)
    full_shape = tuple(int(g.size) for g in grids.values())

    def index_array(idx) -> np.ndarray:
        aff = bind_index(idx, sizes)
        out: np.ndarray = np.full([1] * nvars, aff.const, dtype=np.int64)
        for var, coef in aff.coeffs:
            out = out + coef * grids[var]
        return out

    def gather(acc: Access) -> np.ndarray:
        return values[acc.tensor][tuple(index_array(i) for i in acc.indices)]

    def ev(node: Expr | Compare):
        if isinstance(node, Access):
            return gather(node)
        if isinstance(node, Number):
            return np.float64(node.value)
        if isinstance(node, BinOp):
            return BINARY_OPS[node.op](ev(node.left), ev(node.right))
        if isinstance(node, Neg):
            return np.negative(ev(node.operand))
        if isinstance(node, Compare):
            return _COMPARE[node.op](index_array(node.left), index_array(node.right))
        if node.func == "where":
            cond, a, b = (ev(x) for x in node.args)
            return np.where(cond, a, b)
        return FUNCTIONS[node.func](*(ev(x) for x in node.args))

    result = np.broadcast_to(ev(e.stmt.expr), full_shape)
    nout = len(e.out_vars)
    if e.reduce_op is not None:
        result = _REDUCE[e.reduce_op](result, axis=tuple(range(nout, nvars)))
    out_index = tuple(
        grids[v].reshape(grids[v].shape[:nout]) + off for v, off in zip(e.out_vars, e.out_offsets, strict=True)
    )
    values[e.name][out_index] = result
