"""The numpy reference interpreter: the semantics of a cascade, executed densely in float64.

**Semantics.** An Einsum is evaluated at every point of its iteration space (one value per variable);
recurrences run step by step over their iterative rank, with every Einsum of the recurrence evaluated for that
step. Reductions start from the operator's identity (0 for sum, -inf for max, +inf for min). The interpreter is
the oracle for every other part of attnscope.

**Evaluation.** Broadcasting an Einsum over its whole iteration space at once holds that space in memory (a
4K head of FuseMax is 8.6 GB), so the same values are computed in bounded pieces:

- an access is a strided view of its tensor over the iteration space (an affine index is a stride), never a
  gathered copy; views are built once per Einsum, and a piece or a recurrence step is a slice of them;
- a sum whose body is a product of factors (accesses, or any sub-expression such as ``where(c, X, 0)`` or
  ``exp(X)``, evaluated on the factor's own variables) is contracted: two factors as one batched matrix
  product (BLAS), more with ``numpy.einsum``: :meth:`_Bound.contraction`;
- everything else (max and min, maps, a sum of one factor) is broadcast as written, a map's last operation
  writing the output tensor: :meth:`_Bound.broadcast`;
- either evaluates pieces of the iteration space of at most :data:`PIECE_BYTES`, split along output
  variables first (pieces of a reduced variable are combined with the reduction); the broadcast pieces of an
  output run in :data:`THREADS` threads;
- when the intermediates would not fit in :data:`CHUNK_BYTES`, the cascade runs in chunks of a *free rank*
  (one every access indexes by its own variable and no Einsum reduces, such as the query rank P of
  attention), holding the intermediates of one chunk at a time: :func:`plan`.

A contraction reorders products and sums, which is exact up to rounding for finite values: a piece with an
infinite or NaN factor is broadcast instead. Every output agrees with the plain broadcasting evaluation to
1e-12 relative (tests/einsum/test_interpreter_speed.py keeps that evaluation as the reference).
"""

from __future__ import annotations

import math
import os
import string
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache

import networkx as nx
import numpy as np
from numpy.lib.stride_tricks import as_strided

from einsum.ast import Access, BinOp, Call, Compare, Expr, IdxVar, Neg, Number, index_vars, walk
from einsum.cascade import Affine, Cascade, Einsum, Tensor, bind_index, var_offset
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
    "step": lambda x: np.where(np.greater(x, 0.0), 1.0, 0.0),  # 0 at NaN (inf - inf): see einsum.syntax
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
_COMBINE = {"sum": np.add, "max": np.maximum, "min": np.minimum}
"""How the results of two pieces of a reduced variable combine."""

LIVE_ARRAYS = 4
"""Arrays the size of a piece that a broadcast evaluation holds at once (operands, a partial result, a mask):
the memory estimate's factor, so the estimate is of the right order rather than a bound."""
PIECE_BYTES = 64 * 2**20
"""Working memory of one piece of an Einsum's evaluation (its iteration space is split until a piece fits)."""
THREADS = min(os.cpu_count() or 1, 4)
"""Pieces of a broadcast evaluation computed at once (numpy releases the GIL in its loops); matrix products
use BLAS's own threads instead."""
CHUNK_BYTES = 2**30
"""Intermediates held at once: beyond this the cascade runs in chunks of a free rank."""
MIN_CHUNK = 2048
"""The fewest values of the free rank a chunk covers (when the rank has that many): every chunk runs every
recurrence step again, and a cascade that needs smaller chunks to fit in memory would run for hours, so it
is refused by the memory check instead."""


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
    chunking = plan(cascade, full, keep_intermediates)
    _check_memory(cascade, full, chunking)
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
    rank, chunk = chunking.rank, chunking.chunk
    for name, t in cascade.tensors.items():
        if t.role != "input" and name not in chunking.chunked:
            values[name] = _initial(cascade, name, full)
    buffers = {name: _initial(cascade, name, {**full, rank: chunk}) for name in chunking.chunked}
    stale = _stale_reads(cascade) & chunking.chunked
    groups = _execution_groups(cascade)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if rank is None:
            _run_groups(cascade, groups, values, full, full, {})
        else:
            var = rank.lower()
            for lo in range(0, full[rank], chunk):
                hi = min(lo + chunk, full[rank])
                for name in stale if lo else ():  # the others are written before they are read
                    buffers[name].fill(0.0)
                    _set_init_value(cascade.tensors[name], buffers[name])
                arrays = _chunk_arrays(cascade, values, buffers, rank, lo, hi)
                todo = [g for g in groups if lo == 0 or any(var in e.iter_vars for e in g)]  # the rest is done
                _run_groups(cascade, todo, arrays, full, {**full, rank: hi - lo}, {var: lo})
    keep = cascade.tensors if keep_intermediates else cascade.outputs
    return {n: values[n] for n in keep if cascade.tensors[n].role != "input" or keep_intermediates}


def _run_groups(
    cascade: Cascade,
    groups: Sequence[Sequence[Einsum]],
    arrays: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    extents: Mapping[str, int],
    shift: Mapping[str, int],
) -> None:
    """Evaluate groups of Einsums in order on the arrays of one chunk (``extents``: the chunk's rank sizes;
    ``shift``: where the chunk starts along its free rank); a recurrence step by step."""
    for group in groups:
        bound = [_Bound(e, arrays, sizes, extents, shift) for e in group]
        if len(group) == 1 and group[0].name not in cascade.recurrences:
            bound[0].evaluate({})
            continue
        var = cascade.recurrences[group[0].name]
        for step in range(sizes[var.upper()]):
            for b in bound:
                b.evaluate({var: step})


# ---------------------------------------------------------------------------------------------------------
# Chunks of a free rank, and the memory they take


@dataclass(frozen=True)
class Chunking:
    """How a run holds its intermediates: all at once (``rank`` None), or ``chunk`` values of the free rank
    ``rank`` at a time for the tensors in ``chunked`` (the intermediates that have that rank and are not
    returned)."""

    rank: str | None
    chunk: int
    chunked: frozenset[str]


@lru_cache(maxsize=256)
def free_ranks(cascade: Cascade) -> tuple[str, ...]:
    """Ranks the cascade can run in independent chunks of: every access indexes the rank by its own variable
    (``p``, at most once per tensor), no other index uses that variable, no Einsum reduces it, and it is
    neither partitioned nor iterative. Mask conditions may use the variable and the rank's size freely."""
    iterative = {t.ranks[t.iterative_dim] for t in cascade.tensors.values() if t.iterative_dim is not None}
    candidates = {r for t in cascade.tensors.values() for r in t.ranks}
    candidates -= iterative | set(cascade.partitions) | set(cascade.parent_of)
    free = []
    for rank in sorted(candidates):
        var = rank.lower()
        if any(t.ranks.count(rank) > 1 for t in cascade.tensors.values()):
            continue
        if any(var in e.reduce_vars for e in cascade.einsums):
            continue
        accesses = [a for e in cascade.einsums for a in (*e.reads, e.stmt.output)]
        if all(_indexes_plainly(a, cascade.tensors[a.tensor].ranks, rank) for a in accesses):
            free.append(rank)
    return tuple(free)


def _indexes_plainly(acc: Access, ranks: Sequence[str], rank: str) -> bool:
    """Whether ``acc`` indexes ``rank`` by its variable alone and uses that variable nowhere else."""
    var = rank.lower()
    for r, idx in zip(ranks, acc.indices, strict=True):
        if r == rank:
            if not (isinstance(idx, IdxVar) and idx.name == var):
                return False
        elif any(v.name == var for v in index_vars(idx)):
            return False
    return True


def plan(cascade: Cascade, full: Mapping[str, int], keep_intermediates: bool = False) -> Chunking:
    """The chunking of a run: none when the intermediates fit in :data:`CHUNK_BYTES`; else the free rank whose
    chunks leave the least held, in chunks whose intermediates fit (but at least :data:`MIN_CHUNK` values)."""
    returned = set(cascade.tensors) if keep_intermediates else set(cascade.outputs)
    candidates = [n for n, t in cascade.tensors.items() if t.role != "input" and n not in returned]
    total = sum(_bytes(cascade, n, full) for n in candidates)
    best, least = Chunking(None, 1, frozenset()), total
    if total <= CHUNK_BYTES:
        return best
    for rank in free_ranks(cascade):
        chunked = frozenset(n for n in candidates if rank in cascade.tensors[n].ranks)
        covered, size = sum(_bytes(cascade, n, full) for n in chunked), full[rank]
        if not covered:
            continue
        chunk = max(min(MIN_CHUNK, size), math.floor(CHUNK_BYTES * size / covered))
        held = total - covered + covered * chunk / size
        if chunk < size and held < least:
            best, least = Chunking(rank, chunk, chunked), held
    return best


def memory_bytes(
    cascade: Cascade, full: Mapping[str, int], chunking: Chunking | None = None
) -> tuple[float, float, str]:
    """(bytes of the tensors held at once, bytes of the largest Einsum's evaluation, that Einsum) in float64.

    The tensors are the inputs, the returned tensors and the intermediates (those of ``chunking``'s free rank
    for one chunk). An Einsum is evaluated (one step of its recurrence, one chunk at a time) in pieces of at
    most :data:`PIECE_BYTES`, :data:`THREADS` pieces at once, about :data:`LIVE_ARRAYS` arrays of a piece's
    size alive.
    """
    chunking = chunking or plan(cascade, full)
    rank, chunk = chunking.rank, chunking.chunk
    tensors = 0.0
    for name in cascade.tensors:
        share = chunk / full[rank] if name in chunking.chunked else 1.0
        tensors += _bytes(cascade, name, full) * share
    largest, name = 0.0, ""
    for e in cascade.einsums:
        step = cascade.recurrences.get(e.name)
        extents = [chunk if rank and v == rank.lower() else full[v.upper()] for v in e.iter_vars if v != step]
        points = float(np.prod(extents, dtype=np.float64))
        if points > largest:
            largest, name = points, e.name
    return tensors, min(largest * 8 * LIVE_ARRAYS, float(PIECE_BYTES * THREADS)), name


def _bytes(cascade: Cascade, name: str, full: Mapping[str, int]) -> float:
    return 8.0 * math.prod(cascade.tensors[name].shape(full))


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


def _check_memory(cascade: Cascade, full: Mapping[str, int], chunking: Chunking) -> None:
    """Refuse, before any work, a run that cannot fit in this machine's memory."""
    tensors, evaluation, name = memory_bytes(cascade, full, chunking)
    available = available_memory_bytes()
    if tensors + evaluation > available:
        gib = 2.0**30
        held = (
            f", intermediates held for {chunking.chunk} of the {full[chunking.rank]} values of "
            f"{chunking.rank} at a time"
            if chunking.rank
            else ""
        )
        shape = ", ".join(f"{r}={full[r]}" for r in cascade.ranks)
        raise ShapeError(
            f"{cascade.name}: interpreting it at these sizes needs about {(tensors + evaluation) / gib:,.1f} GiB "
            f"({shape}: its tensors {tensors / gib:,.1f} GiB in float64{held}; Einsum {name} evaluated in "
            f"pieces, {evaluation / gib:,.2f} GiB at once), and {available / gib:,.1f} GiB is available; "
            "give smaller sizes"
        )


def _initial(cascade: Cascade, name: str, full: Mapping[str, int]) -> np.ndarray:
    """A tensor before its Einsum runs: zeros, and the init value at step 0 of an iterative rank."""
    t = cascade.tensors[name]
    arr = np.zeros(t.shape(full))
    _set_init_value(t, arr)
    return arr


def _set_init_value(t: Tensor, arr: np.ndarray) -> None:
    if t.iterative_dim is not None:
        arr[(slice(None),) * t.iterative_dim + (0,)] = t.init_value


@lru_cache(maxsize=256)
def _stale_reads(cascade: Cascade) -> frozenset[str]:
    """Tensors of a recurrence that an Einsum of the same recurrence reads at a step other than the one it
    is at (``v``, or ``v+1`` once written): such a read may see what the previous chunk left, so their chunk
    buffers start again from zeros and the init value. Every other buffer is overwritten before it is read."""
    group_of = {e.name: k for k, group in enumerate(_execution_groups(cascade)) for e in group}
    stale = set()
    for e in cascade.einsums:
        var = cascade.recurrences.get(e.name)
        for acc in e.reads if var else ():
            producer = cascade.tensors[acc.tensor].producer
            if producer is None or group_of[producer] != group_of[e.name]:
                continue
            written = cascade.einsum_by_name[producer]
            position = written.out_vars.index(var)
            step, offset = var_offset(acc.indices[position])
            if step is None or step.name != var or offset not in (0, written.out_offsets[position]):
                stale.add(acc.tensor)
    return frozenset(stale)


def _chunk_arrays(
    cascade: Cascade,
    values: Mapping[str, np.ndarray],
    buffers: Mapping[str, np.ndarray],
    rank: str | None,
    lo: int,
    hi: int,
) -> dict[str, np.ndarray]:
    """Every tensor as the chunk [lo, hi) of ``rank`` sees it: a slice of a held tensor, or a chunk buffer."""
    if rank is None:
        return dict(values)
    arrays = {}
    for name, t in cascade.tensors.items():
        if rank not in t.ranks:
            arrays[name] = values[name]
            continue
        axis = t.ranks.index(rank)
        arr, window = (buffers[name], slice(0, hi - lo)) if name in buffers else (values[name], slice(lo, hi))
        arrays[name] = arr[(slice(None),) * axis + (window,)]
    return arrays


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


# ---------------------------------------------------------------------------------------------------------
# One Einsum, evaluated in pieces

Box = tuple[tuple[int, int], ...]
"""A box of an Einsum's iteration space: [lo, hi) per variable, in ``iter_vars`` order."""


@lru_cache(maxsize=4096)
def contraction_factors(e: Einsum) -> tuple[Expr, ...] | None:
    """The factors of a sum of products, or None when the contraction does not apply.

    It applies to a sum whose body is a product (``*``; ``a / b`` is ``a * (1 / b)``, ``-a`` is ``-1 * a``)
    of at least two factors that are not constants, where every reduced variable appears in a factor (a
    variable that appears nowhere counts its terms, which only the broadcast evaluation does).
    """
    if e.reduce_op != "sum":
        return None
    factors = tuple(_product(e.stmt.expr))
    if sum(not isinstance(f, Number) for f in factors) < 2:
        return None
    if not set(e.reduce_vars) <= set().union(*(_expr_vars(f) for f in factors)):
        return None
    return factors


def _product(node: Expr) -> list[Expr]:
    if isinstance(node, BinOp) and node.op == "*":
        return _product(node.left) + _product(node.right)
    if isinstance(node, BinOp) and node.op == "/":
        return [*_product(node.left), BinOp("/", Number(1.0, node.span), node.right, node.span)]
    if isinstance(node, Neg):
        return [Number(-1.0, node.span), *_product(node.operand)]
    return [node]


@lru_cache(maxsize=8192)
def _expr_vars(node: Expr | Compare) -> frozenset[str]:
    """The variables a value expression depends on (through its accesses and mask conditions)."""
    found = set()
    for n in walk(node):
        if isinstance(n, Access):
            found.update(v.name for idx in n.indices for v in index_vars(idx))
        elif isinstance(n, Compare):
            found.update(v.name for side in (n.left, n.right) for v in index_vars(side))
    return frozenset(found)


class _Bound:
    """One Einsum bound to the arrays of a chunk: a strided view of every access over the whole iteration
    space, from which a piece or a recurrence step takes a slice."""

    def __init__(
        self,
        e: Einsum,
        arrays: Mapping[str, np.ndarray],
        sizes: Mapping[str, int],
        extents: Mapping[str, int],
        shift: Mapping[str, int],
    ):
        self.e = e
        self.sizes = sizes
        self.vars = e.iter_vars
        self.nout = len(e.out_vars)
        self.extent = tuple(extents[v.upper()] for v in self.vars)
        self.views = {}
        self.used: dict[Access, tuple[bool, ...]] = {}
        for acc in e.reads:
            if acc in self.views:
                continue
            used = {v.name for idx in acc.indices for v in index_vars(idx)}
            affines = [bind_index(idx, sizes) for idx in acc.indices]
            self.views[acc] = _strided(arrays[acc.tensor], affines, self.vars, self.extent, used, writeable=False)
            self.used[acc] = tuple(v in used for v in self.vars)
        out_affines = [Affine(((v, 1),), off) for v, off in zip(e.out_vars, e.out_offsets, strict=True)]
        self.out = _strided(arrays[e.name], out_affines, e.out_vars, self.extent[: self.nout], set(e.out_vars))
        self.grids = {
            v: np.arange(shift.get(v, 0), shift.get(v, 0) + n, dtype=np.int64)
            for v, n in zip(self.vars, self.extent, strict=True)
        }
        self.factors = contraction_factors(e)
        if self.factors is not None:
            self.factor_vars = [tuple(v for v in self.vars if v in _expr_vars(f)) for f in self.factors]

    def evaluate(self, fixed: Mapping[str, int]) -> None:
        """Evaluate the Einsum over its iteration space, ``fixed`` pinning variables to one value."""
        box = tuple(
            (fixed[v], fixed[v] + 1) if v in fixed else (0, n) for v, n in zip(self.vars, self.extent, strict=True)
        )
        self._pieces(box, self.out[tuple(slice(lo, hi) for lo, hi in box[: self.nout])])

    # -- pieces -------------------------------------------------------------------------------------------
    def _pieces(self, box: Box, out: np.ndarray, contract: bool = True, parallel: bool = True) -> None:
        """Evaluate ``box`` into ``out`` (its output, one axis per output variable), in pieces that fit in
        :data:`PIECE_BYTES`, split along the variable that shrinks them most (an output variable, the
        outermost, where several do as well); a split reduced variable combines its pieces' results with the
        reduction. Pieces of a broadcast evaluation's output run in :data:`THREADS` threads."""
        contract = contract and self.factors is not None
        terms = self._terms(box, contract)
        cost = sum(size for size, _ in terms)
        axis = _split_axis(self.vars, box, terms)
        if cost <= PIECE_BYTES or axis is None:
            if not contract:
                self.broadcast(box, out)
            elif not self.contraction(box, out):
                self._pieces(box, out, False, parallel)  # in pieces of the broadcast evaluation's size
            return
        lo, hi = box[axis]
        step = -(-(hi - lo) // min(hi - lo, math.ceil(cost / PIECE_BYTES)))
        ranges = [(start, min(start + step, hi)) for start in range(lo, hi, step)]
        pieces = [(*box[:axis], r, *box[axis + 1 :]) for r in ranges]
        if axis < self.nout:  # each piece writes its own part of the output
            parts = [out[(slice(None),) * axis + (slice(a - lo, b - lo),)] for a, b in ranges]
            if parallel and not contract and THREADS > 1:
                list(_pool().map(self._piece_in_thread, pieces, parts))
            else:
                for piece, part in zip(pieces, parts, strict=True):
                    self._pieces(piece, part, contract, parallel)
            return
        self._pieces(pieces[0], out, contract, parallel)  # pieces of a reduced variable: combined
        part = np.empty(out.shape)
        for piece in pieces[1:]:
            self._pieces(piece, part, contract, parallel)
            _COMBINE[self.e.reduce_op](out, part, out=out)

    def _piece_in_thread(self, box: Box, out: np.ndarray) -> None:
        """A piece of a broadcast evaluation in a worker thread (its numpy loops run beside the others')."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # a thread starts with the default
            self._pieces(box, out, contract=False, parallel=False)

    def _terms(self, box: Box, contract: bool) -> list[tuple[float, frozenset[str]]]:
        """The bytes an evaluation of ``box`` holds, as (bytes, the variables they grow with): the
        contraction's factors (those computed with their temporaries) and twice its result; a broadcast
        evaluation's :data:`LIVE_ARRAYS` arrays of the box."""
        extent = dict(zip(self.vars, (hi - lo for lo, hi in box), strict=True))
        if not contract:
            return [(8.0 * LIVE_ARRAYS * math.prod(extent.values()), frozenset(self.vars))]
        terms = [(16.0 * math.prod(extent[v] for v in self.e.out_vars), frozenset(self.e.out_vars))]
        for f, fvars in zip(self.factors, self.factor_vars, strict=True):
            live = 1 if isinstance(f, Access) else LIVE_ARRAYS
            terms.append((8.0 * live * math.prod(extent[v] for v in fvars), frozenset(fvars)))
        return terms

    # -- the two evaluations ------------------------------------------------------------------------------
    def broadcast(self, box: Box, out: np.ndarray) -> None:
        """The body broadcast over ``box``, then reduced: the definition, for any Einsum."""
        expr = self.e.stmt.expr
        if self.e.reduce_op is not None:
            shape = tuple(hi - lo for lo, hi in box)
            value = np.broadcast_to(self._value(expr, box), shape)
            _REDUCE[self.e.reduce_op](value, axis=tuple(range(self.nout, len(self.vars))), out=out)
        else:
            self._into(expr, box, out)

    def _into(self, node: Expr, box: Box, out: np.ndarray) -> None:
        """A map's body written into ``out`` (the whole box) with few temporaries: the last operation writes
        ``out``, after an operand that spans the whole box was computed there."""
        if isinstance(node, Call) and node.func == "where":
            cond, a, b = (self._value(x, box) for x in node.args)
            np.copyto(out, b)
            np.copyto(out, a, where=np.broadcast_to(cond, out.shape))
            return
        top = _ufunc(node)
        if top is None:
            out[...] = self._value(node, box)
            return
        ufunc, args = top
        inner = next((k for k, x in enumerate(args) if _ufunc(x) and _expr_vars(x) >= set(self.vars)), None)
        if inner is not None:
            self._into(args[inner], box, out)
        ufunc(*(out if k == inner else self._value(x, box) for k, x in enumerate(args)), out=out)

    def contraction(self, box: Box, out: np.ndarray) -> bool:
        """A sum of products over ``box``, each factor evaluated on its own variables. The factors with a
        reduced variable are summed: two as one batched ``numpy.matmul`` (:func:`_matmul`), one alone, more
        with ``numpy.einsum``; the others (and constants) then multiply the sum. Reordering products and sums
        is exact up to rounding for finite values only: a piece with an infinite or NaN factor is left to the
        broadcast evaluation (returns False)."""
        summed: list[Operand] = []
        outer: list[Operand] = []
        for f, fvars in zip(self.factors, self.factor_vars, strict=True):
            keep = tuple(v in fvars for v in self.vars)
            if isinstance(f, Number):
                operand = np.float64(f.value)
            elif isinstance(f, Access):
                operand = self.views[f][_window(box, self.used[f], keep)]
            else:
                shape = tuple(hi - lo if k else 1 for (lo, hi), k in zip(box, keep, strict=True))
                operand = np.broadcast_to(self._value(f, box), shape)[tuple(slice(None) if k else 0 for k in keep)]
            if not math.isfinite(np.sum(operand)):  # an overflowing sum of finite values is refused too: safe
                return False
            (summed if set(fvars) & set(self.e.reduce_vars) else outer).append((operand, fvars))
        out_vars = self.e.out_vars
        if len(summed) == 2:
            _matmul(*summed, out, out_vars)
        else:
            letter = dict(zip(self.vars, string.ascii_letters, strict=False))
            result_vars = [v for v in out_vars if any(v in fv for _, fv in summed)]
            spec = ",".join("".join(letter[v] for v in fv) for _, fv in summed)
            spec += "->" + "".join(letter[v] for v in result_vars)
            path = _einsum_path(spec, tuple(x.shape for x, _ in summed))
            out[...] = _arrange(np.einsum(spec, *(x for x, _ in summed), optimize=path), result_vars, out_vars)
        for x, xv in outer:
            np.multiply(out, _arrange(x, xv, out_vars), out=out)
        return True

    def _value(self, node: Expr | Compare, box: Box):
        """A value expression over ``box``, an array broadcastable to the box's shape."""
        if isinstance(node, Access):
            return self.views[node][_window(box, self.used[node], (True,) * len(box))]
        if isinstance(node, Number):
            return np.float64(node.value)
        if isinstance(node, BinOp):
            return BINARY_OPS[node.op](self._value(node.left, box), self._value(node.right, box))
        if isinstance(node, Neg):
            return np.negative(self._value(node.operand, box))
        if isinstance(node, Compare):
            return _COMPARE[node.op](self._index(node.left, box), self._index(node.right, box))
        if node.func == "where":
            cond, a, b = (self._value(x, box) for x in node.args)
            return np.where(cond, a, b)
        return FUNCTIONS[node.func](*(self._value(x, box) for x in node.args))

    def _index(self, idx, box: Box) -> np.ndarray:
        """An index expression's values over ``box`` (the chunk's global values of the variables)."""
        aff = bind_index(idx, self.sizes)
        out: np.ndarray = np.full([1] * len(self.vars), aff.const, dtype=np.int64)
        for var, coef in aff.coeffs:
            axis = self.vars.index(var)
            lo, hi = box[axis]
            shape = [1] * len(self.vars)
            shape[axis] = hi - lo
            out = out + coef * self.grids[var][lo:hi].reshape(shape)
        return out


def _pool() -> ThreadPoolExecutor:
    """The worker threads of this process (a forked child makes its own: it has none of its parent's)."""
    return _pool_of(os.getpid())


@cache
def _pool_of(pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(THREADS, thread_name_prefix="interpreter")


def _split_axis(variables: Sequence[str], box: Box, terms: Sequence[tuple[float, frozenset[str]]]) -> int | None:
    """The variable whose split shrinks a piece most: the one the most bytes grow with; among equals the first
    (output variables come first, so no results need combining; then the outermost). None when no split of a
    variable that has more than one value shrinks anything."""
    best, axis = 0.0, None
    for i, (v, (lo, hi)) in enumerate(zip(variables, box, strict=True)):
        grows = sum(size for size, used in terms if v in used)
        if hi - lo > 1 and grows > best:
            best, axis = grows, i
    return axis


def _ufunc(node: Expr) -> tuple[np.ufunc, tuple[Expr, ...]] | None:
    """The numpy ufunc a map node applies and its operands, or None (a constant, an access, ``where``, or a
    function written in numpy calls)."""
    if isinstance(node, BinOp):
        return BINARY_OPS[node.op], (node.left, node.right)
    if isinstance(node, Neg):
        return np.negative, (node.operand,)
    if isinstance(node, Call) and isinstance(FUNCTIONS.get(node.func), np.ufunc):
        return FUNCTIONS[node.func], node.args
    return None


def _window(box: Box, used: Sequence[bool], keep: Sequence[bool]) -> tuple:
    """The slice of a view over the whole space that covers ``box``: a range on the axes the access uses,
    the whole (length 1) axis on the others, or its one element where the axis is dropped (not ``keep``)."""
    return tuple(
        (slice(lo, hi) if u else slice(None)) if k else (lo if u else 0)
        for (lo, hi), u, k in zip(box, used, keep, strict=True)
    )


def _strided(
    arr: np.ndarray,
    affines: Sequence[Affine],
    axes: Sequence[str],
    extents: Sequence[int],
    used: set[str],
    writeable: bool = True,
) -> np.ndarray:
    """``arr[affines]`` at every point of the box [0, extents) of ``axes``, as a view: one axis per variable
    (extent 1, stride 0 for a variable the index does not use)."""
    extent = dict(zip(axes, extents, strict=True))
    strides = dict.fromkeys(axes, 0)
    for pos, aff in enumerate(affines):
        low = high = aff.const
        for var, coef in aff.coeffs:
            span = coef * (extent[var] - 1)
            low, high = low + min(0, span), high + max(0, span)
            strides[var] += coef * arr.strides[pos]
        if low < 0 or high >= arr.shape[pos]:
            raise IndexError(f"index {low}..{high} outside 0..{arr.shape[pos] - 1} at position {pos}")
    base = arr[tuple(slice(aff.const, None) for aff in affines)] if arr.ndim else arr[...]
    shape = [extent[v] if v in used else 1 for v in axes]
    return as_strided(base, shape, [strides[v] for v in axes], writeable=writeable)


Operand = tuple[np.ndarray, tuple[str, ...]]
"""An array and the variable of each of its axes."""


def _matmul(a: Operand, b: Operand, out: np.ndarray, out_vars: Sequence[str]) -> None:
    """``out`` (one axis per output variable) = the sum over the other variables of the product of two
    operands, as one batched ``numpy.matmul`` (a product when nothing is summed), written straight into
    ``out`` when its layout allows. A variable of one operand alone that is not an output is summed first."""
    (x, xv), (y, yv) = _sum_alone(a, b[1], out_vars), _sum_alone(b, a[1], out_vars)
    position = {v: k for k, v in enumerate(out_vars)}
    if min((position[v] for v in yv if v not in xv), default=len(position)) < min(
        (position[v] for v in xv if v not in yv), default=len(position)
    ):
        (x, xv), (y, yv) = (y, yv), (x, xv)  # the left operand's own variables come first in the output
    batch = tuple(v for v in out_vars if v in xv and v in yv)
    left = tuple(v for v in out_vars if v in xv and v not in yv)
    right = tuple(v for v in out_vars if v in yv and v not in xv)
    summed = tuple(v for v in xv if v in yv and v not in position)
    extent = dict(zip(xv, x.shape, strict=True)) | dict(zip(yv, y.shape, strict=True))
    nb, nl, nr, nc = (math.prod(extent[v] for v in group) for group in (batch, left, right, summed))
    lhs = x.transpose([xv.index(v) for v in (*batch, *left, *summed)]).reshape(nb, nl, nc)
    rhs = y.transpose([yv.index(v) for v in (*batch, *summed, *right)]).reshape(nb, nc, nr)
    layout = (*batch, *left, *right)
    target = out.reshape(nb, nl, nr) if layout == tuple(out_vars) else None
    if target is not None and not np.may_share_memory(target, out):
        target = None  # the reshape copied: out's layout does not allow it
    result = np.matmul(lhs, rhs, out=target) if summed else np.multiply(lhs, rhs, out=target)
    if target is None:
        out[...] = _arrange(result.reshape([extent[v] for v in layout]), layout, out_vars)


def _sum_alone(a: Operand, other: Sequence[str], out_vars: Sequence[str]) -> Operand:
    """An operand summed over its variables that neither the other operand nor the output has."""
    x, xv = a
    alone = [k for k, v in enumerate(xv) if v not in other and v not in out_vars]
    if not alone:
        return a
    return x.sum(axis=tuple(alone)), tuple(v for k, v in enumerate(xv) if k not in alone)


def _arrange(result: np.ndarray, axes: Sequence[str], out_vars: Sequence[str]) -> np.ndarray:
    """A result over ``axes`` laid out along ``out_vars`` (length 1 where it has no such axis), to broadcast."""
    axes = list(axes)
    ordered = np.transpose(result, [axes.index(v) for v in out_vars if v in axes])
    return ordered.reshape([result.shape[axes.index(v)] if v in axes else 1 for v in out_vars])


@lru_cache(maxsize=1024)
def _einsum_path(spec: str, shapes: tuple[tuple[int, ...], ...]) -> list:
    """The pairwise contraction order of ``numpy.einsum`` (greedy, intermediates within a piece's budget)."""
    operands = [np.broadcast_to(0.0, s) for s in shapes]
    return np.einsum_path(spec, *operands, optimize=("greedy", PIECE_BYTES // 8))[0]
