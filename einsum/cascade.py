"""A cascade: ordered Einsums whose dataflow DAG is derived from which Einsum writes and reads each tensor.

Semantic rules checked here (each failure raises :class:`~einsum.errors.CascadeError` pointing at the text):

- every tensor read is an input or written by exactly one Einsum; inputs are declared with their ranks;
- every index is affine in the variables (no product of two variables), and an index of an access uses
  only variables of the tensor's rank at that position and of its partition parts (``m`` and ``m+1`` -> M;
  ``m1*M0+m0``, ``m1*M0+M0-1`` (the last element of block m1) or ``m0`` -> M when ``partition M = M1 * M0``
  is declared; any constant such as ``M1`` (the last step of iterative M1) or ``M0-1``). Whether its values
  stay inside the rank is checked once sizes are bound (:meth:`Cascade.rank_sizes`): its range over the
  variables' ranges must lie in 0..size-1 (0..size along an iterative rank);
- variables that vanish from the output are reduced explicitly (``sum[e]``), and only those;
- a tensor written at ``v+1`` is a recurrence over the *iterative rank* of ``v``: it needs an ``init`` at 0,
  and only such recurrences may close a cycle in the dataflow.

Rank sizes are bound separately (:meth:`Cascade.rank_sizes`), so one parsed cascade serves every shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import networkx as nx

from einsum.ast import (
    Access,
    Compare,
    DensityDecl,
    EinsumStmt,
    IdxBin,
    IdxInt,
    IdxSize,
    IdxVar,
    IndexExpr,
    InitDecl,
    InputDecl,
    OutputDecl,
    ParamDecl,
    PartitionDecl,
    Program,
    format_index,
    index_nodes,
    index_vars,
    walk,
)
from einsum.errors import CascadeError, ShapeError, Span
from einsum.syntax import NAMING_RULE, parse

# ---------------------------------------------------------------------------------------------------------
# Affine index expressions


def index_monomials(idx: IndexExpr) -> dict[tuple[str, ...], int]:
    """Expand an index expression into monomials: sorted symbol tuple -> integer coefficient."""
    if isinstance(idx, IdxInt):
        return {(): idx.value}
    if isinstance(idx, IdxVar | IdxSize):
        return {(idx.name,): 1}
    left, right = index_monomials(idx.left), index_monomials(idx.right)
    out: dict[tuple[str, ...], int] = {}
    if idx.op in "+-":
        sign = 1 if idx.op == "+" else -1
        for mono, c in left.items():
            out[mono] = out.get(mono, 0) + c
        for mono, c in right.items():
            out[mono] = out.get(mono, 0) + sign * c
    else:
        for m1, c1 in left.items():
            for m2, c2 in right.items():
                mono = tuple(sorted(m1 + m2))
                out[mono] = out.get(mono, 0) + c1 * c2
    return {m: c for m, c in out.items() if c != 0}


@dataclass(frozen=True)
class Affine:
    """A bound index: ``const + sum(coef * var)`` with integer coefficients."""

    coeffs: tuple[tuple[str, int], ...]
    const: int

    def bounds(self, sizes: Mapping[str, int]) -> tuple[int, int]:
        """Smallest and largest value over the variables' ranges (variable v ranges over 0..size(V)-1)."""
        lo = hi = self.const
        for var, c in self.coeffs:
            top = c * (sizes[var.upper()] - 1)
            lo, hi = lo + min(0, top), hi + max(0, top)
        return lo, hi


def bind_index(idx: IndexExpr, sizes: Mapping[str, int]) -> Affine:
    """Substitute rank sizes into an index expression, giving an affine function of the variables."""
    coeffs: dict[str, int] = {}
    const = 0
    for var, c, size_names in _terms(idx):
        factor = c * math.prod(sizes[s] for s in size_names)
        if var is None:
            const += factor
        else:
            coeffs[var] = coeffs.get(var, 0) + factor
    return Affine(tuple(sorted((v, c) for v, c in coeffs.items() if c != 0)), const)


@lru_cache(maxsize=8192)
def _terms(idx: IndexExpr) -> tuple[tuple[str | None, int, tuple[str, ...]], ...]:
    """The monomials of an index expression as (its first variable or None, coefficient, the rank sizes it
    multiplies): what :func:`bind_index` needs besides the sizes. Keyed on the expression (which compares
    without its source span)."""
    out = []
    for mono, c in index_monomials(idx).items():
        variables = [s for s in mono if s[0].islower()]
        out.append((variables[0] if variables else None, c, tuple(s for s in mono if not s[0].islower())))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------
# The cascade's parts


@dataclass(frozen=True)
class Tensor:
    """A tensor of the cascade: its ranks in array order and its role."""

    name: str
    ranks: tuple[str, ...]
    role: str  # "input", "intermediate" or "output"
    producer: str | None = None
    #: position of the iterative rank (extent = size + 1: steps 0..N), or None
    iterative_dim: int | None = None
    init_value: float | None = None

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """Array shape for the given rank sizes; an iterative rank has one extra step (its initial value)."""
        return tuple(sizes[r] + (1 if i == self.iterative_dim else 0) for i, r in enumerate(self.ranks))


@dataclass(frozen=True)
class Einsum:
    """One Einsum of a cascade, named by the tensor it writes."""

    name: str
    stmt: EinsumStmt = field(repr=False)
    out_vars: tuple[str, ...]
    out_offsets: tuple[int, ...]
    iter_vars: tuple[str, ...]  # output variables in output order, then reduced variables
    reduce_op: str | None
    reduce_vars: tuple[str, ...]
    reads: tuple[Access, ...] = field(repr=False)
    conditions: tuple[Compare, ...] = field(repr=False)

    @property
    def text(self) -> str:
        return self.stmt.text

    @property
    def line(self) -> int:
        return self.stmt.span.line

    @property
    def inputs(self) -> tuple[str, ...]:
        """Distinct tensors read, in textual order."""
        return tuple(dict.fromkeys(a.tensor for a in self.reads))


class Cascade:
    """A validated cascade of Einsums. Build with :meth:`from_text`."""

    def __init__(self, program: Program, name: str, doc: str = ""):
        self.program = program
        self.name = name
        self.doc = doc
        self._build()

    @classmethod
    def from_text(cls, text: str, name: str = "cascade", doc: str = "", origin: str | None = None) -> Cascade:
        """Parse and validate cascade text.

        >>> c = Cascade.from_text("input A[M,K], B[K,N]\\nC[m,n] = sum[k] A[m,k] * B[k,n]")
        >>> c.outputs, c.tensors["C"].ranks
        (('C',), ('M', 'N'))
        """
        return cls(parse(text, origin or f"<{name}>"), name, doc)

    # -- construction -------------------------------------------------------------------------------------
    def _error(self, message: str, span: Span | None) -> CascadeError:
        return CascadeError(message, self.program.source, span, self.program.origin)

    def _build(self) -> None:
        stmts = self.program.statements
        self.partitions: dict[str, tuple[str, ...]] = {}
        inputs: dict[str, InputDecl] = {}
        inits: dict[str, InitDecl] = {}
        einsum_stmts: dict[str, EinsumStmt] = {}
        output_decl: OutputDecl | None = None
        params: dict[str, ParamDecl] = {}
        densities: dict[str, DensityDecl] = {}
        for s in stmts:
            if isinstance(s, ParamDecl | DensityDecl):
                seen, key = (params, s.rank) if isinstance(s, ParamDecl) else (densities, s.tensor)
                if key in seen:
                    raise self._error(f"{key} has two {s.__class__.__name__[:-4].lower()} statements", s.span)
                seen[key] = s
            elif isinstance(s, PartitionDecl):
                self._add_partition(s)
            elif isinstance(s, InputDecl):
                if s.tensor in inputs:
                    raise self._error(f"input {s.tensor} is declared twice", s.span)
                inputs[s.tensor] = s
            elif isinstance(s, InitDecl):
                if s.target.tensor in inits:
                    raise self._error(f"{s.target.tensor} has two init statements", s.span)
                inits[s.target.tensor] = s
            elif isinstance(s, OutputDecl):
                if output_decl is not None:
                    raise self._error("a cascade has one output statement; list all outputs in it", s.span)
                output_decl = s
            else:
                name = s.output.tensor
                if name in inputs:
                    raise self._error(f"{name} is an input and cannot be written by an Einsum", s.output.span)
                if name in einsum_stmts:
                    first = einsum_stmts[name].span.line
                    raise self._error(
                        f"{name} is already written on line {first}; every tensor has one producing Einsum "
                        "(a recurrence writes T[v+1] from T[v] in a single statement)",
                        s.output.span,
                    )
                einsum_stmts[name] = s
        self.parent_of = {part: parent for parent, parts in self.partitions.items() for part in parts}
        known_ranks = {r for d in inputs.values() for r in d.ranks} | set(self.partitions) | set(self.parent_of)

        tensors: dict[str, Tensor] = {n: Tensor(n, d.ranks, "input") for n, d in inputs.items()}
        for name, s in einsum_stmts.items():
            tensors[name] = self._output_tensor(s, known_ranks, inits.get(name))
        for name, init in inits.items():
            if name not in einsum_stmts:
                raise self._error(
                    f"init for {name}, but no Einsum writes {name}[...v+1...] as a recurrence", init.target.span
                )
        self.tensors = tensors

        einsums = {name: self._einsum(s, known_ranks) for name, s in einsum_stmts.items()}
        self._check_unused_inputs(inputs, einsums)
        # An upper-case name in a mask condition that no tensor uses is a size-only rank (a window W, say):
        # it takes a size like any rank and indexes nothing.
        self.size_ranks = tuple(
            sorted(
                {
                    n.name
                    for e in einsums.values()
                    for c in e.conditions
                    for side in (c.left, c.right)
                    for n in index_nodes(side)
                    if isinstance(n, IdxSize) and n.name not in known_ranks
                }
            )
        )
        self.ranks = tuple(
            sorted(known_ranks | set(self.size_ranks) | {v.upper() for e in einsums.values() for v in e.iter_vars})
        )
        self._build_graph(einsums)
        self._set_outputs(output_decl, einsums)
        self._set_declared(params, densities)

    def _set_declared(self, params: dict[str, ParamDecl], densities: dict[str, DensityDecl]) -> None:
        for rank, d in params.items():
            if rank not in self.ranks:
                raise self._error(
                    f"param {rank}: {rank} is not a rank of this cascade; its ranks are {', '.join(self.ranks)} "
                    "(a size-only rank such as a window W is one an index condition names)",
                    d.span,
                )
        for tensor, d in densities.items():
            if self.tensors.get(tensor) is None or self.tensors[tensor].role != "input":
                raise self._error(
                    f"density {tensor}: only an input mask has a density; the inputs are {', '.join(self.inputs)}",
                    d.span,
                )
        self.params: dict[str, int] = {r: d.value for r, d in params.items()}
        """Declared default sizes (``param W = 4096``): used for a rank that is neither given nor derivable."""
        self.densities: dict[str, float] = {t: d.value for t, d in densities.items()}
        """Declared fractions of nonzeros of input masks (``density BM = 0.25``)."""

    def _add_partition(self, s: PartitionDecl) -> None:
        if s.rank in self.partitions:
            raise self._error(f"rank {s.rank} is partitioned twice", s.span)
        if s.rank in s.parts or len(set(s.parts)) != len(s.parts):
            raise self._error(f"the parts of {s.rank} must be distinct new ranks", s.span)
        for part in s.parts:
            if any(part in parts for parts in self.partitions.values()):
                raise self._error(f"rank {part} is already part of another partition", s.span)
        self.partitions[s.rank] = s.parts

    def _output_tensor(self, s: EinsumStmt, known_ranks: set[str], init: InitDecl | None) -> Tensor:
        ranks: list[str] = []
        iterative_dim = None
        seen: set[str] = set()
        for pos, idx in enumerate(s.output.indices):
            var, offset = var_offset(idx)
            if isinstance(idx, IdxSize):
                raise self._error(
                    f"{idx.name} is a rank size, not a variable: {NAMING_RULE}; iterate with {idx.name.lower()!r}",
                    idx.span,
                )
            if var is None or offset not in (0, 1):
                raise self._error(
                    f"an output index must be a rank variable (m) or, for a recurrence, a variable plus one "
                    f"(m1+1); found {format_index(idx)!r}",
                    idx.span,
                )
            if var.name in seen:
                raise self._error(f"variable {var.name} appears twice in the output {s.output.tensor}", idx.span)
            seen.add(var.name)
            if var.rank not in known_ranks:
                raise self._error(_unknown_rank_message(var), var.span)
            if offset == 1:
                if iterative_dim is not None:
                    raise self._error(
                        f"{s.output.tensor} recurs over two ranks; a recurrence has one iterative rank", idx.span
                    )
                iterative_dim = pos
            ranks.append(var.rank)
        init_value = None
        if iterative_dim is not None:
            var_name = var_offset(s.output.indices[iterative_dim])[0].name
            if init is None:
                shown = ",".join("0" if i == iterative_dim else format_index(x) for i, x in enumerate(s.output.indices))
                raise self._error(
                    f"{s.output.tensor} is a recurrence over iterative rank {var_name.upper()} (written at "
                    f"{var_name}+1) and needs its initial value: add `init {s.output.tensor}[{shown}] = ...`",
                    s.output.span,
                )
            self._check_init(init, ranks, iterative_dim)
            init_value = init.value
        elif init is not None:
            raise self._error(
                f"init for {s.output.tensor}, but its Einsum writes no index v+1; only recurrences over an "
                "iterative rank take an initial value",
                init.span,
            )
        return Tensor(s.output.tensor, tuple(ranks), "intermediate", s.output.tensor, iterative_dim, init_value)

    def _check_init(self, init: InitDecl, ranks: list[str], iterative_dim: int) -> None:
        target = init.target
        if len(target.indices) != len(ranks):
            raise self._error(
                f"{target.tensor} has {len(ranks)} ranks {ranks}, the init gives {len(target.indices)} indices",
                target.span,
            )
        for pos, idx in enumerate(target.indices):
            if pos == iterative_dim:
                if not (isinstance(idx, IdxInt) and idx.value == 0):
                    raise self._error(
                        f"the init of {target.tensor} sets step 0 of iterative rank {ranks[pos]}: write 0 here",
                        idx.span,
                    )
            elif not (isinstance(idx, IdxVar) and idx.rank == ranks[pos]):
                raise self._error(f"expected the variable {ranks[pos].lower()} of rank {ranks[pos]} here", idx.span)

    def _check_affine(self, idx: IndexExpr) -> None:
        """Refuse an index that multiplies variables together: an index is affine in the variables."""
        for mono in index_monomials(idx):
            variables = [s for s in mono if s[0].islower()]
            if len(variables) > 1:
                raise self._error(
                    f"index {format_index(idx)!r} multiplies variables {' and '.join(sorted(set(variables)))}; an "
                    "index is affine: a sum of variables times integers and rank sizes (m1*M0+m0, M0-1, m+1)",
                    idx.span,
                )

    def _walked_rank(self, idx: IndexExpr) -> str | None:
        """The rank an index's variables walk: the one rank of them all, or the rank their partition parts
        split (M for m1 and m0 of partition M = M1 * M0); None when the index has no variable."""
        ranks = {v.rank for v in index_vars(idx)}
        if len(ranks) <= 1:
            return ranks.pop() if ranks else None
        lines = [self._ancestors(r) for r in sorted(ranks)]
        common = [r for r in lines[0] if all(r in line for line in lines[1:])]
        if not common:
            raise self._error(
                f"index {format_index(idx)!r} mixes variables of unrelated ranks {sorted(ranks)}; only the parts "
                "of a declared partition combine (m1*M0+m0 for partition M = M1 * M0)",
                idx.span,
            )
        return common[0]

    def _ancestors(self, rank: str) -> list[str]:
        """The rank, then the ranks it is (recursively) a part of, innermost first."""
        line = [rank]
        while line[-1] in self.parent_of:
            line.append(self.parent_of[line[-1]])
        return line

    def _check_access(self, acc: Access) -> None:
        tensor = self.tensors.get(acc.tensor)
        if tensor is None:
            raise self._error(
                f"tensor {acc.tensor} is neither an input nor written by any Einsum; declare it with "
                f"`input {acc.tensor}[...]` or add an Einsum that writes it",
                acc.span,
            )
        if len(acc.indices) != len(tensor.ranks):
            raise self._error(
                f"{acc.tensor} has {len(tensor.ranks)} ranks [{','.join(tensor.ranks)}] but is indexed with "
                f"{len(acc.indices)}",
                acc.span,
            )
        for pos, idx in enumerate(acc.indices):
            for node in index_nodes(idx):
                if isinstance(node, IdxSize) and node.name not in self.partitions and not self._is_rank(node.name):
                    raise self._error(
                        f"{node.name!r} is not a rank of this cascade, so it has no size; an upper-case name in an "
                        f"index is a rank's size ({'ranks are UPPER case, variables lower case'})",
                        node.span,
                    )
            self._check_affine(idx)
            # Any affine index of the variables of the rank and of its partition parts (m, m1*M0+m0,
            # m1*M0+M0-1, M0-1): its range is checked against the rank's size once sizes are bound.
            rank = self._walked_rank(idx)
            if rank is not None and rank != tensor.ranks[pos] and rank not in self.children(tensor.ranks[pos]):
                raise self._error(
                    f"{acc.tensor} has rank {tensor.ranks[pos]} at position {pos + 1}, but the index "
                    f"{format_index(idx)!r} walks rank {rank}",
                    idx.span,
                )
            if isinstance(idx, IdxSize) and idx.name == tensor.ranks[pos] and pos != tensor.iterative_dim:
                raise self._error(
                    f"index {idx.name} is the size of rank {idx.name}, one past its last element; only an "
                    f"iterative rank has that step (write the variable {idx.name.lower()} to iterate over "
                    f"{idx.name}: ranks are UPPER case, variables lower case)",
                    idx.span,
                )

    def _is_rank(self, name: str) -> bool:
        return name in self.parent_of or any(name in t.ranks for t in self.tensors.values())

    def _einsum(self, s: EinsumStmt, known_ranks: set[str]) -> Einsum:
        tensor = self.tensors[s.output.tensor]
        out_vars, out_offsets = [], []
        for idx in s.output.indices:
            var, offset = var_offset(idx)
            out_vars.append(var.name)
            out_offsets.append(offset)
        reads = tuple(n for n in walk(s.expr) if isinstance(n, Access))
        conditions = tuple(n for n in walk(s.expr) if isinstance(n, Compare))
        for acc in reads:
            self._check_access(acc)
        for c in conditions:
            self._check_affine(c.left)
            self._check_affine(c.right)
        rhs_vars: dict[str, IdxVar] = {}
        for idx in [i for a in reads for i in a.indices] + [x for c in conditions for x in (c.left, c.right)]:
            for v in index_vars(idx):
                rhs_vars.setdefault(v.name, v)
                if v.rank not in known_ranks:
                    raise self._error(_unknown_rank_message(v), v.span)
        vanish = [v for n, v in rhs_vars.items() if n not in out_vars]
        declared = {v.name: v for v in s.reduce_vars}
        if s.reduce_op is None and vanish:
            v = vanish[0]
            raise self._error(
                f"variable {v.name} does not appear in the output {tensor.name}; reduce it explicitly, e.g. "
                f"sum[{','.join(x.name for x in vanish)}] or max[{','.join(x.name for x in vanish)}]",
                v.span,
            )
        for name, v in declared.items():
            if name in out_vars:
                raise self._error(
                    f"{name} is reduced but also indexes the output {tensor.name}; reduce only variables that "
                    "vanish from the output",
                    v.span,
                )
            if name not in rhs_vars:
                raise self._error(f"{name} is reduced but does not appear on the right-hand side", v.span)
        missing = [v for v in vanish if v.name not in declared]
        if missing:
            raise self._error(
                f"variable {missing[0].name} vanishes from the output {tensor.name} but is not in the reduce "
                f"list {s.reduce_op}[{','.join(declared)}]",
                missing[0].span,
            )
        if len(declared) != len(s.reduce_vars):
            raise self._error("a variable is listed twice in the reduce list", s.reduce_vars[-1].span)
        reduce_vars = tuple(v.name for v in s.reduce_vars)
        return Einsum(
            tensor.name,
            s,
            tuple(out_vars),
            tuple(out_offsets),
            tuple(out_vars) + reduce_vars,
            s.reduce_op,
            reduce_vars,
            reads,
            conditions,
        )

    def _check_unused_inputs(self, inputs: dict[str, InputDecl], einsums: dict[str, Einsum]) -> None:
        read = {t for e in einsums.values() for t in e.inputs}
        for name, decl in inputs.items():
            if name not in read:
                raise self._error(f"input {name} is declared but no Einsum reads it", decl.span)

    def _build_graph(self, einsums: dict[str, Einsum]) -> None:
        full = nx.DiGraph()
        for e in einsums.values():
            full.add_node(e.name, line=e.line)
        for e in einsums.values():
            for acc in e.reads:
                producer = self.tensors[acc.tensor].producer
                if producer is None:
                    continue
                carried = self._is_carried(acc, e)
                if carried is None:
                    continue
                if full.has_edge(producer, e.name):
                    full.edges[producer, e.name]["carried"] &= carried
                else:
                    full.add_edge(producer, e.name, tensor=acc.tensor, carried=carried)
        dag = nx.DiGraph()
        dag.add_nodes_from(full.nodes(data=True))
        dag.add_edges_from((u, v, d) for u, v, d in full.edges(data=True) if not d["carried"])
        try:
            cycle = nx.find_cycle(dag)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            names = [u for u, _ in cycle] + [cycle[0][0]]
            first = einsums[cycle[0][0]]
            raise self._error(
                f"cycle {' -> '.join(names)} is not a recurrence over an iterative rank; a cycle is allowed only "
                "when a tensor is written at v+1 and read at v (with an init at step 0)",
                first.stmt.output.span,
            )
        self.graph = full
        self.dag = dag
        order = nx.lexicographical_topological_sort(dag, key=lambda n: (dag.nodes[n]["line"], n))
        self.einsums: tuple[Einsum, ...] = tuple(einsums[n] for n in order)
        self._check_recurrences()

    def _is_carried(self, acc: Access, consumer: Einsum) -> bool | None:
        """True when ``acc`` reads the previous step of a recurrence; None when it reads only the init."""
        tensor = self.tensors[acc.tensor]
        d = tensor.iterative_dim
        if d is None:
            return False
        idx = acc.indices[d]
        if isinstance(idx, IdxInt) and idx.value == 0:
            return None
        var, offset = var_offset(idx)
        return var is not None and offset == 0

    def _check_recurrences(self) -> None:
        """Each strongly connected group of Einsums must recur over one iterative rank they all iterate."""
        self.recurrences: dict[str, str] = {}  # einsum name -> iterative variable of its recurrence
        for comp in nx.strongly_connected_components(self.graph):
            if len(comp) == 1 and not self.graph.has_edge(next(iter(comp)), next(iter(comp))):
                continue
            ranks = {
                self.tensors[d["tensor"]].ranks[self.tensors[d["tensor"]].iterative_dim]
                for u, v, d in self.graph.subgraph(comp).edges(data=True)
                if d["carried"]
            }
            if len(ranks) != 1:
                raise self._error(
                    f"Einsums {sorted(comp)} recur over several iterative ranks {sorted(ranks)}; one recurrence "
                    "iterates one rank",
                    None,
                )
            var = ranks.pop().lower()
            for name in comp:
                e = next(x for x in self.einsums if x.name == name)
                if var not in e.out_vars:
                    raise self._error(
                        f"{name} takes part in the recurrence over {var.upper()} but does not iterate {var}",
                        e.stmt.output.span,
                    )
                self.recurrences[name] = var

    def _set_outputs(self, decl: OutputDecl | None, einsums: dict[str, Einsum]) -> None:
        consumed = {u for u, v, d in self.graph.edges(data=True) if u != v}
        sinks = tuple(e.name for e in self.einsums if e.name not in consumed)
        if decl is None:
            outputs = sinks
        else:
            outputs = decl.tensors
            for name, span in zip(decl.tensors, decl.spans, strict=True):
                if name not in einsums:
                    raise self._error(f"output {name} is not written by any Einsum", span)
            for name in sinks:
                if name not in outputs:
                    raise self._error(
                        f"{name} is computed but neither read nor listed as an output", einsums[name].stmt.span
                    )
        self.outputs: tuple[str, ...] = tuple(outputs)
        self.inputs: tuple[str, ...] = tuple(n for n, t in self.tensors.items() if t.role == "input")
        for name in self.outputs:
            t = self.tensors[name]
            self.tensors[name] = Tensor(t.name, t.ranks, "output", t.producer, t.iterative_dim, t.init_value)

    # -- queries ------------------------------------------------------------------------------------------
    @cached_property
    def einsum_by_name(self) -> dict[str, Einsum]:
        return {e.name: e for e in self.einsums}

    def text(self) -> str:
        """The cascade's source text."""
        return self.program.source

    def children(self, rank: str) -> tuple[str, ...]:
        """All ranks a rank is (recursively) partitioned into."""
        out: list[str] = []
        for part in self.partitions.get(rank, ()):
            out.append(part)
            out.extend(self.children(part))
        return tuple(out)

    def rank_sizes(self, given: Mapping[str, int]) -> dict[str, int]:
        """Complete rank sizes: check the given ones and derive partition parts.

        For ``partition M = M1 * M0`` any one missing size among M, M1, M0 is derived; sizes must divide.
        """
        try:  # the given sizes in their order, with their types (True is not 1 here)
            key = tuple((rank, type(value), value) for rank, value in given.items())
            hash(key)
        except TypeError:
            return self._rank_sizes(given)
        return dict(_rank_sizes_cached(self, key))

    def _rank_sizes(self, given: Mapping[str, int]) -> dict[str, int]:
        """:meth:`rank_sizes`, uncached."""
        unknown = sorted(set(given) - set(self.ranks))
        if unknown:
            raise ShapeError(
                f"{self.name}: unknown rank{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"its ranks are {', '.join(self.ranks)}"
            )
        sizes: dict[str, int] = {}
        for rank, value in given.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ShapeError(f"{self.name}: rank {rank} must be a positive integer, got {value!r}")
            sizes[rank] = value
        self._derive_parts(sizes)
        declared = {r: v for r, v in self.params.items() if r not in sizes}
        if declared:  # declared sizes fill only what the given ones leave open
            sizes.update(declared)
            self._derive_parts(sizes)
        absent = [r for r in self.ranks if r not in sizes]
        if absent:
            hints = [
                f"{r} (part of partition {self.parent_of[r]} = {' * '.join(self.partitions[self.parent_of[r]])})"
                if r in self.parent_of
                else r
                for r in absent
            ]
            raise ShapeError(f"{self.name}: give a size for {', '.join(hints)}")
        self._check_bounds(sizes)
        return sizes

    def _derive_parts(self, sizes: dict[str, int]) -> None:
        """Derive the one missing size of each partition group, repeatedly; check complete groups."""
        changed = True
        while changed:
            changed = False
            for parent, parts in self.partitions.items():
                group = (parent, *parts)
                missing = [r for r in group if r not in sizes]
                if len(missing) == 1:
                    m = missing[0]
                    if m == parent:
                        sizes[m] = math.prod(sizes[p] for p in parts)
                    else:
                        rest = math.prod(sizes[p] for p in parts if p != m)
                        if sizes[parent] % rest:
                            raise ShapeError(
                                f"{self.name}: {parent}={sizes[parent]} is not divisible by "
                                f"{' * '.join(f'{p}={sizes[p]}' for p in parts if p != m)} "
                                f"(partition {parent} = {' * '.join(parts)})"
                            )
                        sizes[m] = sizes[parent] // rest
                    changed = True
                elif not missing and sizes[parent] != math.prod(sizes[p] for p in parts):
                    raise ShapeError(
                        f"{self.name}: partition {parent} = {' * '.join(parts)} does not hold for "
                        + ", ".join(f"{r}={sizes[r]}" for r in group)
                    )

    def _check_bounds(self, sizes: Mapping[str, int]) -> None:
        key = tuple(sorted(sizes.items()))
        checked = self.__dict__.setdefault("_bounds_checked", set())
        if key in checked:
            return
        self._check_bounds_now(sizes)
        if len(checked) >= _CHECKED_SIZES:
            checked.clear()
        checked.add(key)

    def _check_bounds_now(self, sizes: Mapping[str, int]) -> None:
        reads, distinct, count = self._read_indices
        spans: list[tuple[int, int] | None] = [None] * count  # each distinct index bound once
        shapes: dict[str, tuple[int, ...]] = {}
        for e, acc in reads:
            shape = shapes.get(acc.tensor)
            if shape is None:
                shape = shapes[acc.tensor] = self.tensors[acc.tensor].shape(sizes)
            for pos, (idx, k) in enumerate(zip(acc.indices, distinct[acc], strict=True)):
                span = spans[k]
                if span is None:
                    span = spans[k] = bind_index(idx, sizes).bounds(sizes)
                lo, hi = span
                if lo < 0 or hi >= shape[pos]:
                    rank = self.tensors[acc.tensor].ranks[pos]
                    names = {v.rank for v in index_vars(idx)} | {
                        n.name for n in index_nodes(idx) if isinstance(n, IdxSize)
                    }
                    bound = ", ".join(f"{r}={sizes[r]}" for r in sorted(names | {rank}))
                    raise ShapeError(
                        f"{self.name}: in `{e.text}`, index {format_index(idx)} of {acc.tensor} spans "
                        f"{lo}..{hi} but {acc.tensor} has {shape[pos]} elements along {rank} (indices "
                        f"0..{shape[pos] - 1}; {bound})"
                    )

    @cached_property
    def _read_indices(self) -> tuple[tuple[tuple[Einsum, Access], ...], dict[Access, tuple[int, ...]], int]:
        """Every (Einsum, access) of a read, in order; per access, the number of each of its indices among the
        distinct index expressions of the cascade (equal expressions bind alike); how many there are."""
        reads = tuple((e, acc) for e in self.einsums for acc in e.reads)
        numbers: dict[IndexExpr, int] = {}
        per_access = {acc: tuple(numbers.setdefault(idx, len(numbers)) for idx in acc.indices) for _, acc in reads}
        return reads, per_access, len(numbers)

    def shapes(self, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        """Array shape of every tensor for complete rank sizes."""
        return {n: t.shape(sizes) for n, t in self.tensors.items()}


_CHECKED_SIZES = 4096
"""Complete sizes remembered per cascade as passing :meth:`Cascade._check_bounds` (the set is emptied when full)."""


@lru_cache(maxsize=2048)
def _rank_sizes_cached(cascade: Cascade, given: tuple[tuple[str, type, int], ...]) -> dict[str, int]:
    """:meth:`Cascade.rank_sizes`, keyed on the cascade (by identity) and the given (rank, type, size) in order
    (the result's order follows it); callers get a copy. Errors are not cached: they are raised again."""
    return cascade._rank_sizes({rank: value for rank, _, value in given})


def var_offset(idx: IndexExpr) -> tuple[IdxVar | None, int]:
    """(v, k) when the index is ``v``, ``v+k`` or ``v-k``; (None, 0) otherwise."""
    if isinstance(idx, IdxVar):
        return idx, 0
    if isinstance(idx, IdxBin) and idx.op in "+-" and isinstance(idx.left, IdxVar) and isinstance(idx.right, IdxInt):
        return idx.left, idx.right.value if idx.op == "+" else -idx.right.value
    return None, 0


def _unknown_rank_message(var: IdxVar) -> str:
    return (
        f"variable {var.name} ranges over rank {var.rank}, which no input or partition declares "
        f"(ranks are UPPER case, their variables lower case: {var.name} iterates {var.rank})"
    )
