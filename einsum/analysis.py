"""Analyses of a cascade: operation counts, tensor sizes and the number of passes over a rank.

Counting convention (the one Timeloop and the FuseMax study use): every operator node of an Einsum's
expression is applied once per point of the Einsum's iteration space (all its variables, reduced ones
included, dense: masks do not remove points), and a reduction performs one accumulate per point into an
output that starts at the operator's identity. So ``QK[m,p] = sum[e] Q[e,p]*K[e,m]`` counts M*P*E ``mul``
and M*P*E ``add``. A bare copy counts nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from einsum.ast import Access, BinOp, Call, Neg, index_vars, walk
from einsum.cascade import Cascade, Einsum, var_offset
from einsum.errors import ShapeError

#: operator kind of each expression node
OP_KINDS = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
#: operator kind of each reduction
REDUCE_KINDS = {"sum": "add", "max": "max", "min": "min"}


def iteration_points(e: Einsum, sizes: Mapping[str, int]) -> int:
    """Number of points in an Einsum's iteration space."""
    return math.prod(sizes[v.upper()] for v in e.iter_vars)


def einsum_ops(e: Einsum, sizes: Mapping[str, int]) -> dict[str, int]:
    """Operation counts by kind for one Einsum (exact integers)."""
    points = iteration_points(e, sizes)
    counts: dict[str, int] = {}
    for node in walk(e.stmt.expr):
        if isinstance(node, BinOp):
            kind = OP_KINDS[node.op]
        elif isinstance(node, Neg):
            kind = "neg"
        elif isinstance(node, Call):
            kind = "select" if node.func == "where" else node.func
        else:
            continue
        counts[kind] = counts.get(kind, 0) + points
    if e.reduce_op is not None:
        kind = REDUCE_KINDS[e.reduce_op]
        counts[kind] = counts.get(kind, 0) + points
    return counts


def op_counts(cascade: Cascade, sizes: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """Operation counts by kind for every Einsum, in cascade order."""
    full = cascade.rank_sizes(sizes)
    return {e.name: einsum_ops(e, full) for e in cascade.einsums}


def total_ops(cascade: Cascade, sizes: Mapping[str, int]) -> dict[str, int]:
    """Operation counts by kind summed over the cascade."""
    total: dict[str, int] = {}
    for counts in op_counts(cascade, sizes).values():
        for kind, n in counts.items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))


def tensor_sizes(cascade: Cascade, sizes: Mapping[str, int]) -> dict[str, int]:
    """Elements of every tensor (an iterative rank counts its initial step too)."""
    full = cascade.rank_sizes(sizes)
    return {n: math.prod(t.shape(full)) for n, t in cascade.tensors.items()}


@dataclass(frozen=True)
class PassAnalysis:
    """How many traversals of a rank's fiber a cascade needs, and why.

    ``einsum_pass[name]`` is the pass in which an Einsum runs (Einsums that do not traverse the fiber run
    between passes and have the pass after which they can run). ``carried`` lists the tensors that are
    indexed by the fiber, produced in one pass and read in a later one: a multi-pass implementation must
    keep them on chip (footprint grows with the rank) or spill and re-read them.
    """

    rank: str
    passes: int
    einsum_pass: dict[str, int]
    traverses: dict[str, bool]
    carried: tuple[str, ...]


def pass_analysis(cascade: Cascade, rank: str = "M") -> PassAnalysis:
    """The FuseMax pass analysis over ``rank`` (and the parts it is partitioned into).

    A pass is one traversal of the rank's fiber (for fixed values of all other ranks). An Einsum that walks
    the fiber can run in the pass in which the fiber elements it reads are produced; a value that needs the
    whole fiber (a full reduction, or the last step ``M1`` of a recurrence) is complete only at the end of
    its pass, so an Einsum that walks the fiber and reads it runs in the next pass.
    """
    if rank not in cascade.ranks:
        raise ShapeError(f"{cascade.name}: no rank {rank}; its ranks are {', '.join(cascade.ranks)}")
    fiber_vars = {r.lower() for r in (rank, *cascade.children(rank))}
    einsum_pass: dict[str, int] = {}
    traverses: dict[str, bool] = {}
    # For each tensor: (pass, streams) - streams: its fiber elements appear during that pass;
    # otherwise the whole tensor is complete at the end of that pass (pass 0 = before any traversal).
    avail: dict[str, tuple[int, bool]] = {}
    for name in cascade.inputs:
        streams = any(r in fiber_vars for r in (x.lower() for x in cascade.tensors[name].ranks))
        avail[name] = (1, True) if streams else (0, False)
    for e in cascade.einsums:
        walks = any(v in fiber_vars for v in e.iter_vars)
        need = 1 if walks else 0
        for acc in e.reads:
            if acc.tensor in avail:  # else: the previous step of a recurrence this Einsum belongs to
                need = max(need, _needed_pass(acc, avail, fiber_vars, walks, cascade))
        einsum_pass[e.name] = need
        traverses[e.name] = walks
        out_streams = walks and any(v in fiber_vars for v in e.out_vars)
        avail[e.name] = (need, out_streams)
    passes = max((p for n, p in einsum_pass.items() if traverses[n]), default=0)
    carried = tuple(
        t
        for t, (p, streams) in avail.items()
        if streams
        and cascade.tensors[t].role != "input"
        and any(traverses[e.name] and einsum_pass[e.name] > p and t in e.inputs for e in cascade.einsums)
    )
    return PassAnalysis(rank, passes, einsum_pass, traverses, carried)


def _needed_pass(
    acc: Access, avail: dict[str, tuple[int, bool]], fiber_vars: set[str], walks: bool, cascade: Cascade
) -> int:
    produced, streams = avail[acc.tensor]
    reads_elements = any(
        v.name in fiber_vars for idx in acc.indices for v in index_vars(idx)
    ) and not _reads_final_step(acc, cascade, fiber_vars)
    if streams and reads_elements:
        return produced
    # The whole fiber must be done: usable by a traversal only in the next pass.
    return produced + 1 if walks else produced


def _reads_final_step(acc: Access, cascade: Cascade, fiber_vars: set[str]) -> bool:
    """True when the access reads the last step (e.g. M1) of a recurrence over a rank of the fiber."""
    tensor = cascade.tensors[acc.tensor]
    d = tensor.iterative_dim
    return d is not None and tensor.ranks[d].lower() in fiber_vars and var_offset(acc.indices[d])[0] is None
