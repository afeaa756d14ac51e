"""Reverse-mode differentiation of a cascade: the backward pass as another cascade of Einsums.

:func:`derive_backward` takes a forward cascade and the outputs to differentiate (default: all of them) and
writes a *backward cascade*: an ordinary :class:`~einsum.cascade.Cascade` (text that prints as ``.einsum``,
that the numpy interpreter runs and that every analysis reads) whose outputs are the gradients ``dX`` of the
forward inputs ``X`` given the gradients ``dO`` of the outputs (its *seeds*). :func:`flash_backward` writes
the FlashAttention-2 form of a softmax cascade's backward pass instead (recompute P per tile from the saved
row statistics); :func:`recompute_backward` the reverse mode that recomputes every value indexed by the key
rank (the scores) instead of saving it, for the cascades without such a softmax. Nothing here is written by
hand per cascade: all three read the forward Einsums.

**What the backward cascade reads.** Its inputs are the seeds ``dO``, the forward inputs and the forward
intermediates its rules use (the *saved* tensors, :attr:`Backward.saved`; run the forward pass with
``keep_intermediates`` and :meth:`Backward.inputs` picks them). A tensor of an iterative rank (a recurrence
``RM[b,h,m1+1,p]``) is saved as its written steps ``RM_w[b,h,m1,p]`` (steps 1..M1) and rebuilt inside the
backward cascade with its constant initial step (a copy, which counts no operations).

**Local rules.** Each Einsum ``Y[o] = R[r] f(reads)`` is differentiated alone, in reverse dataflow order:
the adjoint of its body at every iteration point is ``dY[o]`` for a map or a ``sum`` (a sum's adjoint is
broadcast over the reduced variables) and ``dY[o] * (1 - step(Y[o] - f))`` for ``max`` (the points that
attain the maximum; ``min`` mirrors it); the adjoint is then pushed through the expression tree by the rules
of :data:`RULES` (map actions ``+ - * /``, unary minus, ``exp log sqrt sigmoid softplus relu step``,
``max min`` and ``where``); a node whose rule is missing is an error that names the Einsum and the operator,
never a silent zero. Each read ``T[idx]`` receives its share summed over the iteration variables its index
does not use, and a tensor's adjoint is the sum of the shares of all its reads. Reads are scattered back by
their index: a plain variable, or the full expansion of a partition (``K[b,h,e,m1*M0+m0]`` for ``partition
M = M1 * M0``), writes the share in place; any other affine index sums it over ``where(idx == m, ...)``.

**Layouts.** A gradient read through a partition's expansion is kept in the parts: ``dK[b,h,e,m1,m0]`` is
``dK[b,h,e,m1*M0+m0]``, the same array in row-major order (:attr:`Backward.gradients` gives each gradient's
ranks; :meth:`Backward.as_input_shapes` reshapes). The producer of a tensor whose adjoint is in parts is
differentiated with its variable replaced by the expansion (``m`` -> ``m1*M0+m0``), so nothing is
gathered or scattered.

**Recurrences.** A recurrence ``T[v+1] = f(T[v], X[v])`` over iterative rank ``V`` (one Einsum or a strongly
connected group of them) is reversed: its adjoints run as a new recurrence over ``v`` that visits the
forward steps in reverse (step ``s`` of the backward recurrence is forward step ``V-1-s``; forward values are
read at the affine index ``V-1-v``). The state it carries is the adjoint that flows into ``T[k]`` through the
group's reads of ``T[v]``; the adjoints from outside the group (reads of ``T[v+1]``, of ``T[v]`` through a
shifted copy, and of the last step ``T[V]``) are added at each step. The adjoint of a constant initial step
is dropped (nothing upstream of it). After the recurrence, the adjoints are put back in forward order and
the group's Einsums give their other reads their shares like any Einsum.

**Assumptions.** The rules are those of the functions at the point the forward pass evaluated them: ``max``
and ``min`` pass the adjoint to the argument they selected (to the first at a tie; a ``max`` reduction to
every point that attains it), ``relu`` and ``step`` are differentiated away from 0 (``step`` has derivative
0), a comparison in ``where`` selects the branch and is not differentiated. Inputs with a ``density``
declaration are 0/1 masks and are not differentiated (``log(0)`` has no derivative); give ``wrt`` to choose
the inputs. Where the forward pass produced ``inf`` or NaN the rules may too. A forward tensor that repeats a
rank, a diagonal read (``T[m,m]``) or a read of a recurrence's tensor at a step other than ``v``, ``v+1``,
its last or its initial one is refused with a message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from einsum.ast import (
    Access,
    BinOp,
    Call,
    Compare,
    Expr,
    IdxBin,
    IdxInt,
    IdxSize,
    IdxVar,
    IndexExpr,
    Neg,
    Number,
    format_index,
    index_vars,
    walk,
)
from einsum.cascade import Cascade, Einsum, index_monomials, var_offset
from einsum.errors import AttnscopeError, Span
from einsum.interpreter import random_inputs, run

_SPAN = Span(0, 0, 0)


class BackwardError(AttnscopeError):
    """A cascade (or one of its Einsums) that this module cannot differentiate; the message says which and why."""


# ---------------------------------------------------------------------------------------------------------
# Building and printing expressions


def _var(name: str) -> IdxVar:
    return IdxVar(name, _SPAN)


def _num(value: float) -> Number:
    return Number(float(value), _SPAN)


def _access(tensor: str, indices) -> Access:
    return Access(tensor, tuple(indices), _SPAN)


def _is_num(e: Expr, value: float | None = None) -> bool:
    return isinstance(e, Number) and (value is None or e.value == value)


def _add(a: Expr | None, b: Expr | None) -> Expr | None:
    if a is None or _is_num(a, 0.0):
        return b
    if b is None or _is_num(b, 0.0):
        return a
    if isinstance(b, Neg):
        return BinOp("-", a, b.operand, _SPAN)
    if isinstance(a, Neg):
        return BinOp("-", b, a.operand, _SPAN)
    return BinOp("+", a, b, _SPAN)


def _sub(a: Expr, b: Expr) -> Expr:
    if _is_num(b, 0.0):
        return a
    if _is_num(a, 0.0):
        return _neg(b)
    return BinOp("-", a, b, _SPAN)


def _mul(a: Expr, b: Expr) -> Expr:
    if _is_num(a, 0.0) or _is_num(b, 0.0):
        return _num(0.0)
    if _is_num(a, 1.0):
        return b
    if _is_num(b, 1.0):
        return a
    if isinstance(a, Neg):
        return _neg(_mul(a.operand, b))
    if isinstance(b, Neg):
        return _neg(_mul(a, b.operand))
    return BinOp("*", a, b, _SPAN)


def _div(a: Expr, b: Expr) -> Expr:
    if _is_num(a, 0.0):
        return a
    if isinstance(a, Neg):
        return _neg(_div(a.operand, b))
    return BinOp("/", a, b, _SPAN)


def _neg(a: Expr) -> Expr:
    if isinstance(a, Number):
        return _num(-a.value)
    if isinstance(a, Neg):
        return a.operand
    return Neg(a, _SPAN)


def _call(func: str, *args) -> Call:
    return Call(func, tuple(args), _SPAN)


def _fmt_index(idx: IndexExpr) -> str:
    """An index expression as short canonical text (``M1-1-m1+1`` prints ``M1-m1``)."""
    poly = {mono: c for mono, c in index_monomials(idx).items() if c}
    if not poly:
        return "0"

    def key(item):
        mono, _ = item
        has_var = any(s[0].islower() for s in mono)
        return (not has_var, -len(mono), mono)

    out = "" if any(c > 0 for c in poly.values()) else "0"
    for mono, c in sorted(poly.items(), key=lambda item: (item[1] < 0, key(item))):
        syms = sorted(mono, key=lambda s: (s[0].isupper(), s))
        body = "*".join(syms)
        mag = abs(c)
        term = body if (mag == 1 and body) else (f"{mag}*{body}" if body else str(mag))
        out += term if not out and c > 0 else (("-" if c < 0 else "+") + term)
    return out


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def format_expr(e: Expr | Compare, prec: int = 0) -> str:
    """An expression as Einsum text that :func:`einsum.syntax.parse` reads back to an equal tree."""
    if isinstance(e, Access):
        return f"{e.tensor}[{','.join(_fmt_index(i) for i in e.indices)}]"
    if isinstance(e, Number):
        if math.isinf(e.value):
            text = "inf" if e.value > 0 else "-inf"
        else:
            text = repr(abs(e.value)) if e.value != int(e.value) or abs(e.value) >= 1e16 else str(int(abs(e.value)))
            text = "-" + text if e.value < 0 else text
        return f"({text})" if text.startswith("-") and prec > 0 else text
    if isinstance(e, Compare):
        return f"{_fmt_index(e.left)} {e.op} {_fmt_index(e.right)}"
    if isinstance(e, Neg):
        text = "-" + format_expr(e.operand, 3)
        return f"({text})" if prec > 0 else text
    if isinstance(e, BinOp):
        p = _PREC[e.op]
        text = f"{format_expr(e.left, p)} {e.op} {format_expr(e.right, p + 1)}"
        return f"({text})" if p < prec else text
    return f"{e.func}({', '.join(format_expr(a) for a in e.args)})"


def _subst_index(idx: IndexExpr, mapping: Mapping[str, IndexExpr]) -> IndexExpr:
    if isinstance(idx, IdxVar):
        return mapping.get(idx.name, idx)
    if isinstance(idx, IdxBin):
        return IdxBin(idx.op, _subst_index(idx.left, mapping), _subst_index(idx.right, mapping), _SPAN)
    return idx


def _subst(e, mapping: Mapping[str, IndexExpr]):
    """``e`` with variables replaced by index expressions (in every access and every ``where`` condition)."""
    if not mapping:
        return e
    if isinstance(e, Access):
        return Access(e.tensor, tuple(_subst_index(i, mapping) for i in e.indices), _SPAN)
    if isinstance(e, Compare):
        return Compare(e.op, _subst_index(e.left, mapping), _subst_index(e.right, mapping), _SPAN)
    if isinstance(e, BinOp):
        return BinOp(e.op, _subst(e.left, mapping), _subst(e.right, mapping), _SPAN)
    if isinstance(e, Neg):
        return Neg(_subst(e.operand, mapping), _SPAN)
    if isinstance(e, Call):
        return Call(e.func, tuple(_subst(a, mapping) for a in e.args), _SPAN)
    return e


def _vars(e) -> set[str]:
    """Variables an expression depends on (its accesses' indices and its conditions)."""
    found: set[str] = set()
    for n in walk(e):
        if isinstance(n, Access):
            found.update(v.name for idx in n.indices for v in index_vars(idx))
        elif isinstance(n, Compare):
            found.update(v.name for side in (n.left, n.right) for v in index_vars(side))
    return found


def _same(a: IndexExpr, b: IndexExpr) -> bool:
    return index_monomials(a) == index_monomials(b)


def _expansion(parts: tuple[str, ...]) -> IndexExpr:
    """``p1*P2*...*Pn + ... + pn``: the index of a partition's parts in the rank they split."""
    expr: IndexExpr | None = None
    for i, part in enumerate(parts):
        term: IndexExpr = _var(part.lower())
        for later in parts[i + 1 :]:
            term = IdxBin("*", term, IdxSize(later, _SPAN), _SPAN)
        expr = term if expr is None else IdxBin("+", expr, term, _SPAN)
    return expr


def _reversed(var: str) -> IndexExpr:
    """``V-1-v``: forward step of backward step ``v`` of a reversed recurrence."""
    return IdxBin("-", IdxBin("-", IdxSize(var.upper(), _SPAN), IdxInt(1, _SPAN), _SPAN), _var(var), _SPAN)


# ---------------------------------------------------------------------------------------------------------
# Local rules


Pull = Callable[[Expr, Expr], None]
"""Push an adjoint into a sub-expression."""


def _rule_exp(node: Call, adj: Expr, value: Expr, pull: Pull) -> None:
    pull(node.args[0], _mul(adj, value))


def _rule_log(node: Call, adj: Expr, value: Expr, pull: Pull) -> None:
    pull(node.args[0], _div(adj, node.args[0]))


def _rule_sqrt(node: Call, adj: Expr, value: Expr, pull: Pull) -> None:
    pull(node.args[0], _div(_mul(_num(0.5), adj), value))


def _rule_sigmoid(node: Call, adj: Expr, value: Expr, pull: Pull) -> None:
    pull(node.args[0], _mul(adj, _mul(value, _sub(_num(1.0), value))))


def _rule_softplus(node: Call, adj: Expr, value: Expr, pull: Pull) -> None:
    pull(node.args[0], _mul(adj, _call("sigmoid", node.args[0])))


def _rule_relu(node: Call, adj: Expr, value: Expr, pull: Pull) -> None:
    pull(node.args[0], _mul(adj, _call("step", node.args[0])))


def _rule_step(node: Call, adj: Expr, value: Expr, pull: Pull) -> None:
    """A step is flat wherever it is differentiable: nothing flows through it."""


def _rule_max(node: Call, adj: Expr, value: Expr, pull: Pull) -> None:
    a, b = node.args
    takes_b = _call("step", _sub(b, a))  # b > a: b was selected; a tie (or NaN) selects a
    pull(a, _mul(adj, _sub(_num(1.0), takes_b)))
    pull(b, _mul(adj, takes_b))


def _rule_min(node: Call, adj: Expr, value: Expr, pull: Pull) -> None:
    a, b = node.args
    takes_b = _call("step", _sub(a, b))  # b < a: b was selected
    pull(a, _mul(adj, _sub(_num(1.0), takes_b)))
    pull(b, _mul(adj, takes_b))


def _rule_where(node: Call, adj: Expr, value: Expr, pull: Pull) -> None:
    cond, a, b = node.args
    pull(a, _call("where", cond, adj, _num(0.0)))
    pull(b, _call("where", cond, _num(0.0), adj))


RULES: dict[str, Callable[[Call, Expr, Expr, Pull], None]] = {
    "exp": _rule_exp,
    "log": _rule_log,
    "sqrt": _rule_sqrt,
    "sigmoid": _rule_sigmoid,
    "softplus": _rule_softplus,
    "relu": _rule_relu,
    "step": _rule_step,
    "max": _rule_max,
    "min": _rule_min,
    "where": _rule_where,
}
"""The derivative rule of each function: ``rule(node, adjoint, value of the node, pull)`` calls ``pull(arg,
share)`` for each argument that receives a share. The map actions ``+ - * /`` and unary minus are built in."""


def _shares(e: Einsum, expr: Expr, adj: Expr, root_value: Expr | None) -> list[tuple[Access, Expr]]:
    """(read, its share of the adjoint) for every read of ``expr`` whose share is not zero. ``root_value``
    (the Einsum's saved output, for a map) stands for the value of the root node."""
    out: list[tuple[Access, Expr]] = []

    def pull(node: Expr, a: Expr) -> None:
        if _is_num(a, 0.0) or isinstance(node, Number):
            return
        if isinstance(node, Access):
            out.append((node, a))
        elif isinstance(node, BinOp):
            if node.op == "+":
                pull(node.left, a)
                pull(node.right, a)
            elif node.op == "-":
                pull(node.left, a)
                pull(node.right, _neg(a))
            elif node.op == "*":
                pull(node.left, _mul(a, node.right))
                pull(node.right, _mul(a, node.left))
            elif node.op == "/":
                pull(node.left, _div(a, node.right))
                pull(node.right, _neg(_div(_mul(a, node.left), _mul(node.right, node.right))))
            else:
                raise BackwardError(f"{e.name}: no derivative rule for the map action {node.op!r} in `{e.text}`")
        elif isinstance(node, Neg):
            pull(node.operand, _neg(a))
        elif isinstance(node, Call):
            rule = RULES.get(node.func)
            if rule is None:
                raise BackwardError(
                    f"{e.name}: no derivative rule for operator {node.func!r} in `{e.text}`; rules exist for "
                    f"+ - * /, unary minus and {', '.join(sorted(RULES))}"
                )
            value = root_value if (node is expr and root_value is not None) else node
            rule(node, a, value, pull)
        else:
            raise BackwardError(f"{e.name}: no derivative rule for {type(node).__name__} in `{e.text}`")

    pull(expr, adj)
    return out


def _body_adjoint(e: Einsum, expr: Expr, adj: Expr, saved_out: Access) -> Expr:
    """The adjoint of an Einsum's body at each iteration point (see the module docstring)."""
    if e.reduce_op in (None, "sum"):
        return adj
    if e.reduce_op == "max":
        return _mul(adj, _sub(_num(1.0), _call("step", _sub(saved_out, expr))))
    if e.reduce_op == "min":
        return _mul(adj, _sub(_num(1.0), _call("step", _sub(expr, saved_out))))
    raise BackwardError(f"{e.name}: no derivative rule for the reduction {e.reduce_op!r} in `{e.text}`")


# ---------------------------------------------------------------------------------------------------------
# The derived cascade


@dataclass(frozen=True)
class Backward:
    """A derived backward cascade and how it connects to its forward one.

    ``seeds`` maps each differentiated forward output to the backward input holding its gradient;
    ``gradients`` each differentiated forward input to (the backward output holding its gradient, that
    output's ranks: the input's ranks, a rank read through a partition's expansion replaced by its parts);
    ``saved`` each forward tensor the backward reads to the backward input holding it (an iterative tensor
    as its written steps, ``T_w``).
    """

    forward: Cascade
    cascade: Cascade
    outputs: tuple[str, ...]
    seeds: Mapping[str, str]
    gradients: Mapping[str, tuple[str, tuple[str, ...]]]
    saved: Mapping[str, str]
    form: str = "autodiff"
    notes: tuple[str, ...] = field(default=())

    def inputs(
        self, forward_values: Mapping[str, np.ndarray], seeds: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The backward cascade's input arrays from a forward run (``einsum.interpreter.run(...,
        keep_intermediates=True)`` merged with its inputs) and the seed gradients by forward output name."""
        arrays = {}
        for tensor, name in self.saved.items():
            value = np.asarray(forward_values[tensor])
            t = self.forward.tensors[tensor]
            if t.iterative_dim is not None and name != tensor:
                value = value[(slice(None),) * t.iterative_dim + (slice(1, None),)]
            arrays[name] = value
        for output, name in self.seeds.items():
            arrays[name] = np.asarray(seeds[output])
        return arrays

    def as_input_shapes(self, outputs: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
        """The gradients by forward input name, each reshaped to its input's shape (a layout in parts is the
        same row-major array)."""
        full = self.forward.rank_sizes(sizes)
        return {
            x: np.asarray(outputs[name]).reshape(self.forward.tensors[x].shape(full))
            for x, (name, _) in self.gradients.items()
        }


@dataclass
class _Share:
    """A pending share of a tensor's adjoint: ``expr``, summed over its variables that ``layout`` (per position
    of the tensor, the ranks whose variables index the share there: the rank, its parts, or none for a
    recurrence's last step) does not name."""

    layout: tuple[tuple[str, ...], ...]
    expr: Expr
    kind: str = "plain"  # for an iterative tensor: lo (read at v), hi (at v+1), final (at V)


class _Deriver:
    """One derivation: walks the forward Einsums in reverse dataflow order, collecting each tensor's shares
    (:meth:`add_share`), summing them into its adjoint when its producer is reached (:meth:`finish`) and
    giving that producer's reads their shares (:meth:`einsum`, :meth:`recurrence`, :meth:`flash`); the
    emitted lines become the backward cascade (:meth:`build`)."""

    def __init__(
        self,
        forward: Cascade,
        outputs: tuple[str, ...],
        wrt: tuple[str, ...],
        softmax: tuple[_Softmax, ...] = (),
        recompute: frozenset[str] = frozenset(),
    ):
        self.f = forward
        self.softmax = softmax
        self.recompute: set[str] = set(recompute)
        self.form = "flash" if softmax else "recompute" if recompute else "autodiff"
        self.recomputed: list[str] = []
        for sm in softmax:
            producer = forward.tensors[sm.scores].producer
            self.recompute |= {producer, *nx.ancestors(forward.dag, producer)} - set(forward.inputs)
        if any(n in forward.recurrences or forward.tensors[n].iterative_dim is not None for n in self.recompute):
            self.recompute = set()  # scores from a recurrence: saved instead
        self.outputs = outputs
        self.wrt = wrt
        self.lines: list[str] = []
        self.inits: list[str] = []
        self.names: set[str] = set(forward.tensors)
        self.shares: dict[str, list[_Share]] = {}
        self.adjoint: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {}
        self.declared: dict[str, tuple[str, ...]] = {}  # backward inputs: name -> ranks
        self.saved: dict[str, str] = {}
        self.seeds: dict[str, str] = {}
        self.restored: set[str] = set()
        self.produced: set[str] = set()

    # -- names and emission ---------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 2
        while name in self.names:
            name, k = f"{base}{k}", k + 1
        self.names.add(name)
        return name

    def emit(self, name: str, out: list[IndexExpr], expr: Expr, reduce_vars: list[str] | None = None) -> None:
        for acc in (n for n in walk(expr) if isinstance(n, Access)):
            self.use(acc.tensor)
        red = f"sum[{','.join(reduce_vars)}] " if reduce_vars else ""
        self.lines.append(f"{name}[{','.join(_fmt_index(i) for i in out)}] = {red}{format_expr(expr)}")
        self.produced.add(name)

    def use(self, tensor: str) -> None:
        """Note that the backward reads ``tensor``: a forward tensor becomes a saved input (once)."""
        if tensor in self.produced or tensor in self.declared or tensor in self.restored:
            return
        t = self.f.tensors.get(tensor)
        if t is None:
            return  # a backward tensor emitted later in the text (a recurrence state)
        if tensor in self.recompute:  # recomputed from its own Einsum (the scores of the flash form)
            self.produced.add(tensor)
            e = self.f.einsum_by_name[tensor]
            for read in e.inputs:
                self.use(read)
            self.recomputed.append(e.text)
            return
        if t.role == "input" or t.iterative_dim is None:
            self.declared[tensor] = t.ranks
            self.saved[tensor] = tensor
        else:
            steps = self.fresh(f"{tensor}_w")
            self.declared[steps] = t.ranks
            self.saved[tensor] = steps
            self.restored.add(tensor)
            d = t.iterative_dim
            var = t.ranks[d].lower()
            init = [IdxInt(0, _SPAN) if i == d else _var(r.lower()) for i, r in enumerate(t.ranks)]
            self.inits.append(f"init {tensor}[{','.join(_fmt_index(i) for i in init)}] = {_init_text(t.init_value)}")
            out = [IdxBin("+", _var(var), IdxInt(1, _SPAN), _SPAN) if i == d else _var(r.lower())
                   for i, r in enumerate(t.ranks)]  # fmt: skip
            self.lines.insert(0, f"{tensor}[{','.join(_fmt_index(i) for i in out)}] = "
                                 f"{steps}[{','.join(r.lower() for r in t.ranks)}]")  # fmt: skip

    # -- which tensors carry an adjoint ---------------------------------------------------------------
    def needs(self) -> set[str]:
        f = self.f
        depends = set(self.wrt)
        changed = True
        while changed:
            changed = False
            for e in f.einsums:
                if e.name not in depends and any(t in depends for t in e.inputs):
                    depends.add(e.name)
                    changed = True
        reaches = set(self.outputs)
        changed = True
        while changed:
            changed = False
            for e in f.einsums:
                if e.name in reaches:
                    for t in e.inputs:
                        if t not in reaches:
                            reaches.add(t)
                            changed = True
        return depends & reaches

    # -- shares -----------------------------------------------------------------------------------------
    def add_share(self, e: Einsum, acc: Access, share: Expr, iter_vars: set[str]) -> None:
        """Record the share of ``acc``'s tensor from one read (``share`` over the Einsum's variables)."""
        t = self.f.tensors[acc.tensor]
        layout: list[tuple[str, ...]] = []
        conditions: list[Compare] = []
        kind = "plain"
        for pos, (rank, idx) in enumerate(zip(t.ranks, acc.indices, strict=True)):
            if pos == t.iterative_dim:
                var, offset = var_offset(idx)
                if var is not None and var.rank == rank and offset in (0, 1):
                    kind = ("lo", "hi")[offset]
                    layout.append((rank,))
                elif isinstance(idx, IdxSize) and idx.name == rank:
                    kind = "final"
                    layout.append(())
                elif isinstance(idx, IdxInt) and idx.value == 0:
                    return  # the constant initial step: no adjoint
                else:
                    raise BackwardError(
                        f"{e.name}: reads the recurrence {acc.tensor} at step {format_index(idx)} in `{e.text}`; "
                        f"the backward pass handles reads at {rank.lower()}, {rank.lower()}+1, {rank} and 0"
                    )
                continue
            if isinstance(idx, IdxVar) and idx.rank == rank:
                layout.append((rank,))
                continue
            parts = self.f.partitions.get(rank)
            if parts and _same(idx, _expansion(parts)) and t.iterative_dim is None:
                layout.append(parts)
                continue
            # any other affine index: scatter the share back with where(idx == r, share, 0); a reversal
            # (M-1-m, its own inverse) re-indexes the share instead
            var = rank.lower()
            others = [i for k, i in enumerate(acc.indices) if k != pos]
            if var in iter_vars and _is_reversal(idx, var) and all(var not in _vars_of(i) for i in others):
                share = _subst(share, {var: idx})
                layout.append((rank,))
                continue
            if var in iter_vars:
                raise BackwardError(
                    f"{e.name}: cannot scatter the share of {acc.tensor} read at {format_index(idx)} in `{e.text}`: "
                    f"the Einsum already iterates {var}"
                )
            conditions.append(Compare("==", idx, _var(var), _SPAN))
            layout.append((rank,))
        out_vars = [p.lower() for parts in layout for p in parts]
        if len(set(out_vars)) != len(out_vars):
            raise BackwardError(f"{e.name}: {acc.tensor} is read with a variable twice in `{e.text}` (a diagonal)")
        for c in conditions:
            share = _call("where", c, share, _num(0.0))
        share = _counted(share, iter_vars, out_vars)
        self.shares.setdefault(acc.tensor, []).append(_Share(tuple(layout), share, kind))

    def finish(
        self, tensor: str, plain: bool = False, alias: bool = True
    ) -> dict[str, tuple[str, tuple[tuple[str, ...], ...]]]:
        """Sum the pending shares of ``tensor`` into its adjoint (per kind for an iterative tensor); returns
        kind -> (adjoint tensor, layout). ``plain``: the adjoint keeps the tensor's own ranks. ``alias``: a
        single share that is another adjoint read in the same layout (``dPV`` = ``dRO``) is that tensor."""
        t = self.f.tensors[tensor]
        shares = self.shares.pop(tensor, [])
        done = {}
        for kind in ("plain", "lo", "hi", "final"):
            group = [s for s in shares if s.kind == kind]
            if not group:
                continue
            layout = tuple(
                () if all(s.layout[i] == () for s in group)
                else (t.ranks[i],) if plain or all(len(s.layout[i]) <= 1 for s in group)
                else next(s.layout[i] for s in group if len(s.layout[i]) > 1)
                for i in range(len(t.ranks))
            )  # fmt: skip
            base = f"d{tensor}" if kind == "plain" else f"d{tensor}_{kind}"
            seed = self.seeds.get(tensor)
            only = group[0].expr if len(group) == 1 and group[0].layout == layout else None
            if (
                alias
                and isinstance(only, Access)
                and only.tensor not in self.f.tensors
                and list(only.indices) == _indices(layout)
            ):
                done[kind] = (only.tensor, layout)  # the adjoint is another one (or the seed), read as it is
                continue
            name = self.fresh(base if seed is None else f"{base}_all")
            if len(group) == 1 and group[0].layout == layout:
                self.emit_share(name, group[0])
            else:
                total = None
                for s in group:
                    if s.layout == layout and _vars(s.expr) <= {p.lower() for parts in layout for p in parts}:
                        total = _add(total, s.expr)  # nothing to sum over: written in the total itself
                    elif s.layout == layout:
                        part = self.fresh(f"{base}_part")
                        self.emit_share(part, s)
                        total = _add(total, _access(part, _indices(s.layout)))
                    else:
                        total = _add(total, self.convert(base, s, layout))
                self.emit(name, _indices(layout), total)
            done[kind] = (name, layout)
        return done

    def emit_share(self, name: str, s: _Share) -> None:
        out = [p.lower() for parts in s.layout for p in parts]
        reduce_vars = sorted(_vars(s.expr) - set(out))
        self.emit(name, [_var(v) for v in out], s.expr, reduce_vars)

    def convert(self, base: str, s: _Share, layout) -> Expr:
        """A share in another layout, read in ``layout``: a plain position read through the expansion of
        its parts, a position in parts scattered to the plain rank."""
        part = self.fresh(f"{base}_part")
        self.emit_share(part, s)
        idx: list[IndexExpr] = []
        conditions = []
        for have, want in zip(s.layout, layout, strict=True):
            if have == want:
                idx.extend(_var(p.lower()) for p in have)
            elif len(have) == 1 and len(want) > 1:
                idx.append(_expansion(want))
            else:  # parts -> plain
                idx.extend(_var(p.lower()) for p in have)
                conditions.append(Compare("==", _expansion(have), _var(want[0].lower()), _SPAN))
        value: Expr = _access(part, idx)
        if not conditions:
            return value
        for c in conditions:
            value = _call("where", c, value, _num(0.0))
        out = _indices(layout)
        scattered = self.fresh(f"{base}_scatter")
        self.emit(scattered, out, value, sorted(_vars(value) - {v.name for v in out}))
        return _access(scattered, out)

    # -- one Einsum outside a recurrence ----------------------------------------------------------------
    def einsum(self, e: Einsum, needs: set[str], only: Callable[[str], bool] | None = None,
               adjoint: tuple[str, tuple[tuple[str, ...], ...]] | None = None) -> None:  # fmt: skip
        """Give the reads of ``e`` their shares of its output's adjoint (``only``: the reads to serve)."""
        name, layout = adjoint or self.adjoint[e.name]
        mapping: dict[str, IndexExpr] = {}
        for var, parts in zip(e.out_vars, layout, strict=True):
            if len(parts) > 1:
                clash = [p.lower() for p in parts if p.lower() in e.iter_vars]
                if clash:
                    raise BackwardError(
                        f"{e.name}: its adjoint is laid out in {', '.join(parts)} but the Einsum already iterates "
                        f"{clash[0]} in `{e.text}`"
                    )
                mapping[var] = _expansion(parts)
        expr = _subst(e.stmt.expr, mapping)
        out_idx = [_subst_index(i, mapping) for i in e.stmt.output.indices]
        saved_out = _access(e.name, out_idx)
        adj = _access(name, _indices(layout))
        iter_vars = {v for v in e.iter_vars if v not in mapping} | {p.lower() for v in mapping for p in layout[
            e.out_vars.index(v)]}  # fmt: skip
        body = _body_adjoint(e, expr, adj, saved_out)
        root = saved_out if e.reduce_op is None else None
        for acc, share in _shares(e, expr, body, root):
            if acc.tensor in needs and (only is None or only(acc.tensor)):
                self.add_share(e, acc, share, iter_vars)

    # -- a recurrence -----------------------------------------------------------------------------------
    def recurrence(self, group: list[Einsum], var: str, needs: set[str]) -> None:
        f = self.f
        members = {e.name for e in group}
        rev = _reversed(var)
        rev_next = IdxBin("+", rev, IdxInt(1, _SPAN), _SPAN)
        step = IdxBin("+", _var(var), IdxInt(1, _SPAN), _SPAN)
        wanted = [e for e in group if e.name in needs]
        # adjoints from outside the group, in forward order
        outside = {e.name: self.finish(e.name, plain=True) for e in wanted}
        shifted: dict[str, str] = {}
        for name, kinds in outside.items():
            if "lo" in kinds:  # reads of T[v] outside: shifted so backward step s reads forward step V-s
                lo, _ = kinds["lo"]
                t = f.tensors[name]
                z = self.fresh(f"d{name}_shift")
                d = t.iterative_dim
                idx_init = [IdxInt(0, _SPAN) if i == d else _var(r.lower()) for i, r in enumerate(t.ranks)]
                self.inits.append(f"init {z}[{','.join(_fmt_index(i) for i in idx_init)}] = 0")
                self.names.add(z)
                out = [step if i == d else _var(r.lower()) for i, r in enumerate(t.ranks)]
                src = [rev if i == d else _var(r.lower()) for i, r in enumerate(t.ranks)]
                self.emit(z, out, _access(lo, src))
                shifted[name] = z
        carried_targets = {
            acc.tensor
            for e in wanted
            for acc in e.reads
            if acc.tensor in members
            and acc.tensor in needs
            and f.tensors[acc.tensor].iterative_dim is not None
            and var_offset(acc.indices[f.tensors[acc.tensor].iterative_dim])[1] == 0
        }
        state = {name: self.fresh(f"d{name}_carry") for name in sorted(carried_targets)}
        same_step: dict[str, list[Expr]] = {}
        carried: dict[str, list[Expr]] = {}
        reversed_adj: dict[str, str] = {}
        mapping = {var: rev}
        for e in reversed(wanted):
            t = f.tensors[e.name]
            here = [_var(v) for v in e.out_vars]  # the adjoint's indices at backward step v
            terms: Expr | None = None
            if e.name in state:
                terms = _add(terms, _access(state[e.name], here))
            kinds = outside.get(e.name, {})
            d = t.iterative_dim
            at_rev = [rev if i == d or (d is None and v == var) else _var(v) for i, v in enumerate(e.out_vars)]
            for kind in ("plain", "hi"):
                if kind in kinds:
                    terms = _add(terms, _access(kinds[kind][0], at_rev))
            if e.name in shifted:
                terms = _add(terms, _access(shifted[e.name], here))
            if "final" in kinds:
                final_idx = [_var(v) for i, v in enumerate(e.out_vars) if i != d]
                last = _call("where", Compare("==", _var(var), IdxInt(0, _SPAN), _SPAN),
                             _access(kinds["final"][0], final_idx), _num(0.0))  # fmt: skip
                terms = _add(terms, last)
            for share in same_step.pop(e.name, []):
                terms = _add(terms, share)
            if terms is None:
                continue
            name = self.fresh(f"d{e.name}_rev")
            self.emit(name, here, terms)
            reversed_adj[e.name] = name
            # the shares inside the group, at backward step v
            expr = _subst(e.stmt.expr, mapping)
            out_idx = [_subst_index(i, mapping) for i in e.stmt.output.indices]
            saved_out = _access(e.name, out_idx)
            body = _body_adjoint(e, expr, _access(name, here), saved_out)
            for acc, share in _shares(e, expr, body, saved_out if e.reduce_op is None else None):
                if acc.tensor not in members or acc.tensor not in needs:
                    continue
                ti = f.tensors[acc.tensor]
                target_vars = [r.lower() for r in ti.ranks]
                at_step = ti.iterative_dim if ti.iterative_dim is not None else ti.ranks.index(var.upper())
                for pos, (rank, idx) in enumerate(zip(ti.ranks, acc.indices, strict=True)):
                    if pos == at_step:
                        continue
                    if not (isinstance(idx, IdxVar) and idx.rank == rank):
                        raise BackwardError(
                            f"{e.name}: reads {acc.tensor} of its own recurrence at {format_index(idx)} in `{e.text}`;"
                            " the backward pass handles plain variables there"
                        )
                pos = ti.iterative_dim
                at = acc.indices[at_step]
                share = _counted(share, set(e.iter_vars), target_vars)
                reduce_vars = sorted(_vars(share) - set(target_vars))
                if reduce_vars:
                    part = self.fresh(f"d{acc.tensor}_{e.name}")
                    self.emit(part, [_var(v) for v in target_vars], share, reduce_vars)
                    share = _access(part, [_var(v) for v in target_vars])
                if pos is not None and _same(at, rev):
                    carried.setdefault(acc.tensor, []).append(share)
                elif (pos is not None and _same(at, rev_next)) or (pos is None and _same(at, rev)):
                    same_step.setdefault(acc.tensor, []).append(share)
                else:
                    raise BackwardError(
                        f"{e.name}: reads {acc.tensor} of its own recurrence at step {format_index(at)} in "
                        f"`{e.text}`; the backward pass handles the steps {var} and {var}+1"
                    )
        for name, carry in state.items():
            t = f.tensors[name]
            d = t.iterative_dim
            idx_init = [IdxInt(0, _SPAN) if i == d else _var(r.lower()) for i, r in enumerate(t.ranks)]
            self.inits.append(f"init {carry}[{','.join(_fmt_index(i) for i in idx_init)}] = 0")
            total = None
            for share in carried.get(name, []):
                total = _add(total, share)
            if total is None:  # no share flows back: a zero state (it still closes the recurrence)
                total = BinOp("*", _num(0.0), _access(carry, [_var(r.lower()) for r in t.ranks]), _SPAN)
            out = [step if i == d else _var(r.lower()) for i, r in enumerate(t.ranks)]
            self.emit(carry, out, total)
        # back in forward order: each group Einsum gives its reads outside the group their shares
        for e in wanted:
            if e.name not in reversed_adj:
                continue
            t = f.tensors[e.name]
            fwd = self.fresh(f"d{e.name}")
            out = [_var(v) for v in e.out_vars]
            self.emit(fwd, out, _access(reversed_adj[e.name], [rev if v == var else _var(v) for v in e.out_vars]))
            layout = tuple((r,) for r in t.ranks)
            self.einsum(e, needs, only=lambda x: x not in members, adjoint=(fwd, layout))

    # -- the whole cascade ------------------------------------------------------------------------------
    def run(self) -> Backward:
        f = self.f
        needs = self.needs()
        for o in self.outputs:
            if o not in needs:
                continue
            t = f.tensors[o]
            if t.iterative_dim is not None:
                raise BackwardError(f"{f.name}: output {o} is a recurrence's tensor; differentiate a tensor it feeds")
            seed = self.fresh(f"d{o}")
            self.seeds[o] = seed
            self.declared[seed] = t.ranks
            self.shares.setdefault(o, []).append(_Share(tuple((r,) for r in t.ranks), _access(seed, _indices(
                tuple((r,) for r in t.ranks))), "plain"))  # fmt: skip
        if not self.seeds:
            raise BackwardError(f"{f.name}: no output depends on the inputs {', '.join(self.wrt)}")
        softmax = {name: sm for sm in self.softmax for name in sm.einsums}
        for group, var in reversed(_groups(f)):
            sm = softmax.get(group[0].name)
            if sm is not None:
                if sm.output in (e.name for e in group):
                    self.flash(sm, needs)
                continue
            if var is None:
                (e,) = group
                if e.name not in needs:
                    continue
                kinds = self.finish(e.name)
                if "plain" not in kinds:
                    continue
                self.adjoint[e.name] = kinds["plain"]
                self.einsum(e, needs)
            else:
                self.recurrence(group, var, needs)
        gradients = {}
        for x in self.wrt:
            kinds = self.finish(x, alias=False)  # a gradient is an output: written by an Einsum of its own
            if "plain" not in kinds:
                raise BackwardError(f"{f.name}: the gradient of input {x} is zero: no output depends on it")
            name, layout = kinds["plain"]
            gradients[x] = (name, tuple(p for parts in layout for p in parts))
        return self.build(gradients)

    def build(self, gradients) -> Backward:
        f = self.f
        how = {
            "flash": "FlashAttention-2 recomputation",
            "recompute": "reverse mode over its Einsums, the per-key values recomputed",
            "autodiff": "reverse mode over its Einsums",
        }[self.form]
        head = [f"# The backward pass of {f.name}, derived by einsum.backward ({how})."]
        head += [f"input {n}[{','.join(r)}]" for n, r in self.declared.items()]
        head += [f"partition {r} = {' * '.join(p)}" for r, p in f.partitions.items()]
        densities = [f"density {n} = {d!r}" for n, d in f.densities.items() if n in self.declared]
        body = (
            head
            + densities
            + self.inits
            + self.recomputed
            + self.lines
            + [f"output {', '.join(n for n, _ in gradients.values())}"]
        )
        text = "\n".join(body) + "\n"
        name = f"{f.name}-bwd"
        cascade = Cascade.from_text(text, name=name, doc=f"backward pass of {f.name}", origin=f"<{name}>")
        params = [f"param {r} = {v}" for r, v in f.params.items() if r in cascade.ranks]
        if params:
            text = "\n".join(head + params + body[len(head) :]) + "\n"
            cascade = Cascade.from_text(text, name=name, doc=f"backward pass of {f.name}", origin=f"<{name}>")
        return Backward(f, cascade, tuple(self.seeds), dict(self.seeds), gradients, dict(self.saved), self.form)

    # -- FlashAttention-2's recomputation ---------------------------------------------------------------
    def flash(self, sm: _Softmax, needs: set[str]) -> None:
        """The shares of the scores and the values from the softmax's output adjoint dO (FlashAttention-2,
        Dao 2023, Algorithm 2): D = rowsum(dO * O), P = exp(S - LSE) recomputed per tile, dV = P^T dO,
        dP = dO V^T, dS = P * (dP - D)."""
        kinds = self.finish(sm.output, plain=True)
        if "plain" not in kinds:
            return
        g, _ = kinds["plain"]
        out_t = self.f.tensors[sm.output]
        o_idx = [_var(r.lower()) for r in out_t.ranks]
        q_idx = [_var(v) for v in sm.query_vars]
        s_idx = [_var(r.lower()) for r in self.f.tensors[sm.scores].ranks]
        d = self.fresh(f"D{sm.output}")
        self.emit(d, q_idx, _mul(_access(g, o_idx), _access(sm.output, o_idx)), list(sm.value_vars))
        p = self.fresh("P")
        self.emit(p, s_idx, _call("exp", _sub(_access(sm.scores, s_idx), _access(sm.lse, q_idx))))
        if sm.values.tensor in needs:
            self.add_share(sm.pv, sm.values, _mul(_access(p, s_idx), _access(g, o_idx)), set(sm.pv.iter_vars))
        if sm.scores in needs:
            dp = self.fresh("dP")
            self.emit(dp, s_idx, _mul(_access(g, o_idx), sm.values), list(sm.value_vars))
            share = _mul(_access(p, s_idx), _sub(_access(dp, s_idx), _access(d, q_idx)))
            scores = self.f.einsum_by_name[sm.scores]
            self.add_share(scores, _access(sm.scores, s_idx), share, set(scores.out_vars))


def _vars_of(idx: IndexExpr) -> set[str]:
    return {v.name for v in index_vars(idx)}


def _is_reversal(idx: IndexExpr, var: str) -> bool:
    """Whether ``idx`` is ``V-1-v``: the variable ``v`` of rank ``V`` read backwards (its own inverse)."""
    return index_monomials(idx) == {(var.upper(),): 1, (var,): -1, (): -1}


def _init_text(value: float | None) -> str:
    return format_expr(_num(value if value is not None else 0.0))


def _indices(layout) -> list[IndexExpr]:
    return [_var(p.lower()) for parts in layout for p in parts]


def _counted(share: Expr, iter_vars: set[str], keep: list[str]) -> Expr:
    """A share that does not depend on a variable the forward Einsum iterates (and the share's tensor does
    not keep) still sums over it: make the variable appear, with a condition that always holds."""
    for v in sorted(iter_vars):
        if v not in keep and v not in _vars(share):
            share = _call("where", Compare("<", _var(v), IdxSize(v.upper(), _SPAN), _SPAN), share, _num(0.0))
    return share


def _groups(cascade: Cascade) -> list[tuple[list[Einsum], str | None]]:
    """The Einsums in dataflow order, a recurrence (or an Einsum writing a tensor at ``v+1``) as one group
    with its iterative variable."""
    condensed = nx.condensation(cascade.graph)
    position = {e.name: i for i, e in enumerate(cascade.einsums)}
    order = nx.lexicographical_topological_sort(
        condensed, key=lambda c: min(position[n] for n in condensed.nodes[c]["members"])
    )
    out = []
    for c in order:
        members = sorted(
            (cascade.einsum_by_name[n] for n in condensed.nodes[c]["members"]), key=lambda e: position[e.name]
        )
        var = cascade.recurrences.get(members[0].name)
        if var is None and len(members) == 1:
            t = cascade.tensors[members[0].name]
            if t.iterative_dim is not None:
                var = members[0].out_vars[t.iterative_dim]
        out.append((members, var))
    return out


@dataclass(frozen=True)
class _Softmax:
    """A softmax attention inside a cascade: ``output[q, f] = sum_k softmax_k(scores[k, q]) values[k, f]``,
    computed by the Einsums ``einsums``; ``lse`` names the log-sum-exp of the scores per query, which the
    forward cascade (extended by :func:`flash_backward`) saves, ``pv`` the Einsum that reads the values."""

    scores: str
    output: str
    values: Access
    pv: Einsum
    query_vars: tuple[str, ...]
    value_vars: tuple[str, ...]
    einsums: frozenset[str]
    lse: str


def _refusal(f: Cascade, why: str) -> BackwardError:
    return BackwardError(
        f"{f.name}: no FlashAttention-2 form: {why}; its autodiff form is derived instead with --form autodiff"
    )


def _find_softmaxes(f: Cascade) -> list[tuple[_Softmax, str]]:
    """Recognise the softmaxes in ``f`` (each its own scores, values and output); returns each with the
    Einsum text of its log-sum-exp (``LSE[q] = max + log(denominator)``). Refused with a message when one
    ``exp(S - max)`` is not part of a softmax attention, or the softmaxes share intermediates."""

    maxed = {a.tensor for e in f.einsums if e.reduce_op == "max" for a in e.reads}
    candidates = []
    for e in f.einsums:
        x = e.stmt.expr
        if (
            e.reduce_op is None
            and isinstance(x, Call)
            and x.func == "exp"
            and isinstance(x.args[0], BinOp)
            and x.args[0].op == "-"
            and isinstance(x.args[0].left, Access)
            and isinstance(x.args[0].right, Access)
            and x.args[0].left.tensor in maxed
        ):
            candidates.append(e)
    if not candidates:
        raise _refusal(f, "no Einsum of the form exp(S - max) over scores S that a max reduces")
    found = []
    for k, e_exp in enumerate(candidates):
        lse = "LSE" if len(candidates) == 1 else f"LSE_{k + 1}"
        while lse in f.tensors:
            lse += "_"
        found.append(_recognise(f, e_exp, lse))
    inside = {name: sm for sm, _ in found for name in sm.einsums}
    if len(inside) != sum(len(sm.einsums) for sm, _ in found):
        raise _refusal(f, "two softmaxes share Einsums")
    for e in f.einsums:
        for t in e.inputs:
            sm = inside.get(t)
            if sm is not None and t != sm.output and inside.get(e.name) is not sm:
                raise _refusal(f, f"{e.name} reads {t}, an intermediate of the softmax of {sm.scores}")
    return found


def _recognise(f: Cascade, e_exp: Einsum, lse: str) -> tuple[_Softmax, str]:
    """The softmax whose exponentials ``e_exp`` writes (see :func:`_find_softmaxes`)."""

    def refuse(why: str) -> BackwardError:
        return _refusal(f, why)

    scores, shift = e_exp.stmt.expr.args[0].left, e_exp.stmt.expr.args[0].right
    s_t = f.tensors[scores.tensor]
    if f.tensors[scores.tensor].role == "input" or [i for i in scores.indices] != [
        _var(r.lower()) for r in s_t.ranks
    ]:  # fmt: skip
        raise refuse(f"the scores {scores.tensor} are not read with their own variables in `{e_exp.text}`")
    after = nx.descendants(f.graph, s_t.producer)
    # the Einsum reading the values: a sum of (softmax weights) * (an access independent of the scores)
    pv = None
    for e in f.einsums:
        if e.name in after and e.reduce_op == "sum" and isinstance(e.stmt.expr, BinOp) and e.stmt.expr.op == "*":
            left, right = e.stmt.expr.left, e.stmt.expr.right
            if (
                isinstance(left, Access)
                and isinstance(right, Access)
                and left.tensor in after | {scores.tensor}
                and right.tensor not in after
                and right.tensor != scores.tensor
            ):
                pv = (e, right)
                break
    if pv is None:
        raise refuse("no Einsum sum[...] P * V with V independent of the scores")
    pv_e, values = pv
    value_vars = tuple(v for v in _vars(values) if v not in _vars(scores))
    # the output: the first Einsum from the values' product on, outside any recurrence, free of the key
    # variables the product reduces, that divides by a denominator per query (or reads a division)
    keys = set(pv_e.reduce_vars)
    out = den = None
    reach = nx.descendants(f.graph, pv_e.name) | {pv_e.name}
    for e in f.einsums:
        if e.name not in reach or e.name in f.recurrences or f.tensors[e.name].iterative_dim is not None:
            continue
        if keys & set(e.out_vars) or not set(e.out_vars) >= set(value_vars):
            continue
        query = set(e.out_vars) - set(value_vars)
        for src in (e, *(f.einsum_by_name[t] for t in e.inputs if t in f.einsum_by_name)):
            x = src.stmt.expr
            if isinstance(x, BinOp) and x.op == "/" and isinstance(x.right, Access) and _vars(x.right) <= query:
                out, den = e, x.right
                break
        if out is not None:
            break
    if out is None:
        raise refuse("no Einsum that divides the product with the values by a denominator per query")
    query_vars = tuple(v for v in out.out_vars if v not in value_vars)
    # the statistics: the max the exponent subtracts (its last step for a running max) and the denominator
    sh_t = f.tensors[shift.tensor]
    mx = shift
    if sh_t.iterative_dim is not None:
        mx = _access(shift.tensor, [IdxSize(sh_t.ranks[i], _SPAN) if i == sh_t.iterative_dim else idx
                                    for i, idx in enumerate(shift.indices)])  # fmt: skip
    text = f"{lse}[{','.join(query_vars)}] = {format_expr(mx)} + log({format_expr(den)})"
    between = (after | {s_t.producer}) & (set(nx.ancestors(f.graph, out.name)) | {out.name})
    between.discard(s_t.producer)
    sm = _Softmax(scores.tensor, out.name, values, pv_e, query_vars, value_vars, frozenset(between), lse)
    return sm, text


def _with_statistics(f: Cascade, found: list[tuple[_Softmax, str]]) -> Cascade:
    """``f`` that also writes (and returns) the log-sum-exp of each softmax, as FlashAttention-2's forward does."""
    lines = [line for line in f.text().splitlines() if not line.strip().startswith("output")]
    lines += [text for _, text in found]
    lines.append(f"output {', '.join((*f.outputs, *(sm.lse for sm, _ in found)))}")
    return Cascade.from_text("\n".join(lines) + "\n", name=f.name, doc=f.doc, origin=f"<{f.name} with LSE>")


def flash_backward(forward: Cascade, wrt: tuple[str, ...] | None = None, check: bool = True) -> Backward:
    """The FlashAttention-2 form of the backward pass of a softmax attention cascade (Dao 2023, Algorithm 2).

    The softmax is recognised in the forward Einsums: scores ``S`` that a ``max`` reduces and ``exp(S -
    max)`` exponentiates, the Einsum ``sum[...] P * V`` that weights the values and the Einsum that divides
    by the denominator. The forward cascade is extended to save the row statistics as FlashAttention-2's
    forward kernel does, ``LSE[q] = max + log(denominator)`` (from its running max and denominator at their
    last step), and :attr:`Backward.forward` is that extended cascade. The backward cascade reads Q, K, V
    (any inputs), the output O, its gradient dO and LSE: ``D = rowsum(dO * O)``, ``P = exp(S - LSE)``
    recomputed per tile (the scores recomputed from their own Einsums), ``dV = P^T dO``, ``dP = dO V^T``,
    ``dS = P * (dP - D)``; everything before the scores (the products with Q and K, masks, projections) and
    after the output is differentiated by the local rules (:func:`derive_backward`).

    ``check``: confirm the recognition numerically before using it: at every rank of size 2 and random
    inputs, ``sum_k exp(S - LSE) V`` must equal the output (a structure that only looks like softmax
    attention, with a sink in the denominator say, is refused). Several softmaxes with their own scores,
    values and outputs (the two head kinds of ``duo-attention``) each save their statistics (``LSE_1``,
    ``LSE_2``). A softmax normalised inside a larger expression (``AV = RO1/RL1 - LAM * RO2/RL2`` of
    differential attention) is first given an Einsum of its own (:func:`_outline_normalisations`). A
    cascade with no such softmax is refused with a message.
    """
    try:
        found, base = _find_softmaxes(forward), forward
    except BackwardError as first:
        base = _outline_normalisations(forward)
        if base is None:
            raise
        try:
            found = _find_softmaxes(base)
        except BackwardError:
            raise first from None
    extended = _with_statistics(base, found)
    if check:
        for sm, _ in found:
            _check_softmax(extended, sm)
    if wrt is None:
        wrt = tuple(x for x in forward.inputs if x not in forward.densities)
    # differentiate the original outputs; the statistics are saved, not differentiated
    b = _Deriver(extended, tuple(forward.outputs), tuple(wrt), softmax=tuple(sm for sm, _ in found)).run()
    return b


def _outline_normalisations(f: Cascade) -> Cascade | None:
    """``f`` with each division of two reads inside a larger map (``RO1[..M1..] / RL1[..M1..]`` in ``AV =
    RO1/RL1 - LAM * RO2/RL2``, a product ``(X * A) / D`` read as ``X * (A / D)``) written by an Einsum of
    its own, so that a softmax's normalised output is a tensor; None when there is none."""
    lines = f.text().splitlines()
    changed = False
    for e in f.einsums:
        if e.reduce_op is not None or e.name in f.recurrences or f.tensors[e.name].iterative_dim is not None:
            continue
        found: list[str] = []

        def outline(node: Expr, top: bool, e: Einsum = e, found: list[str] = found) -> Expr:
            if isinstance(node, BinOp):
                left, right = node.left, node.right
                if node.op == "/" and isinstance(left, BinOp) and left.op == "*" and isinstance(left.right, Access):
                    node = BinOp("*", left.left, BinOp("/", left.right, right, _SPAN), _SPAN)
                    return outline(node, top)
                if node.op == "/" and isinstance(left, Access) and isinstance(right, Access) and not top:
                    name = f"{e.name}_N{len(found) + 1}"
                    while name in f.tensors:
                        name += "_"
                    out = [v for v in e.out_vars if v in _vars(node)]
                    found.append(f"{name}[{','.join(out)}] = {format_expr(node)}")
                    return _access(name, [_var(v) for v in out])
                return BinOp(node.op, outline(node.left, False), outline(node.right, False), _SPAN)
            if isinstance(node, Neg):
                return Neg(outline(node.operand, False), _SPAN)
            return node

        expr = outline(e.stmt.expr, True)
        if found:
            changed = True
            line = e.stmt.span.line - 1
            lines[line : line + 1] = [*found, f"{format_expr(e.stmt.output)} = {format_expr(expr)}"]
    if not changed:
        return None
    return Cascade.from_text("\n".join(lines) + "\n", name=f.name, doc=f.doc, origin=f"<{f.name}, outlined>")


def _check_softmax(f: Cascade, sm: _Softmax) -> None:
    s_vars = [r.lower() for r in f.tensors[sm.scores].ranks]
    o_vars = [r.lower() for r in f.tensors[sm.output].ranks]
    keys = [v for v in s_vars if v not in sm.query_vars]
    check = (
        f"CHECK_[{','.join(o_vars)}] = sum[{','.join(keys)}] exp({sm.scores}[{','.join(s_vars)}] - "
        f"{sm.lse}[{','.join(sm.query_vars)}]) * {format_expr(sm.values)}"
    )
    lines = [x for x in f.text().splitlines() if not x.strip().startswith("output")]
    lines += [check, f"output {', '.join((*f.outputs, 'CHECK_'))}"]
    try:
        c = Cascade.from_text("\n".join(lines) + "\n", name=f.name)
        sizes = {r: 2 for r in c.ranks if r not in c.partitions}
        x = random_inputs(c, c.rank_sizes(sizes), seed=0)
        for name in c.densities:
            x[name] = np.ones_like(x[name])
        out = run(c, sizes, x, keep_intermediates=True)
    except AttnscopeError as exc:
        raise BackwardError(f"{f.name}: no FlashAttention-2 form: the softmax found does not check ({exc})") from None
    if not np.allclose(out["CHECK_"], out[sm.output], rtol=1e-9, atol=1e-12, equal_nan=True):
        raise BackwardError(
            f"{f.name}: no FlashAttention-2 form: {sm.output} is not sum_k exp({sm.scores} - LSE) "
            f"{format_expr(sm.values)} at random inputs (a sink or another term in the softmax?); its autodiff "
            "form is derived instead with --form autodiff"
        )


def recompute_backward(forward: Cascade, wrt: tuple[str, ...] | None = None) -> Backward:
    """Reverse mode over the Einsums (:func:`derive_backward`) that saves no per-key value: every intermediate
    indexed by the key rank (:func:`einsum.analysis.key_ranks`; the scores ``QK[b,h,m,p]`` and what maps them,
    ``sigmoid(QK + SB)``) that is not a recurrence's is recomputed in the backward cascade from its own Einsum,
    as FlashAttention recomputes P and FlashSigmoid (Ramapuram et al., ICLR 2025) its sigmoid, instead of being
    saved by the forward pass and read back (a keys x queries tensor per head). What is saved is the inputs, the
    outputs, the per-query values (reductions over the keys) and the recurrences' steps. The FlashAttention-2
    form (:func:`flash_backward`) is this plus a softmax's row statistics; this form serves the cascades it
    refuses. A cascade with no such value to recompute is refused with a message.
    """
    from einsum.analysis import key_ranks

    try:
        key = key_ranks(forward)[0]
    except AttnscopeError as exc:
        raise BackwardError(f"{forward.name}: no recomputation form: {exc}") from None
    keyish = {key, *forward.partitions.get(key, ())}
    recompute = frozenset(
        e.name
        for e in forward.einsums
        if e.name not in forward.outputs
        and e.name not in forward.recurrences
        and forward.tensors[e.name].iterative_dim is None
        and keyish & set(forward.tensors[e.name].ranks)
    )
    if not recompute:
        raise BackwardError(
            f"{forward.name}: no recomputation form: no intermediate indexed by the key rank {key} outside a "
            "recurrence; its autodiff form saves nothing per key"
        )
    if wrt is None:
        wrt = tuple(x for x in forward.inputs if x not in forward.densities)
    return _Deriver(forward, tuple(forward.outputs), tuple(wrt), recompute=recompute).run()


FORMS = {
    "autodiff": lambda c: derive_backward(c),
    "flash": lambda c: flash_backward(c),
    "recompute": lambda c: recompute_backward(c),
}
"""The forms of the backward pass :func:`derive` writes."""


def derive(forward: Cascade, form: str = "autodiff") -> Backward:
    """The backward cascade of ``forward`` in ``form`` (``autodiff`` or ``flash``)."""
    if form not in FORMS:
        raise BackwardError(f"unknown form {form!r} of the backward pass; known: {', '.join(FORMS)}")
    return FORMS[form](forward)


def derive_backward(
    forward: Cascade, outputs: tuple[str, ...] | None = None, wrt: tuple[str, ...] | None = None
) -> Backward:
    """The backward cascade of ``forward`` by reverse mode over its Einsums (see the module docstring).

    ``outputs``: the forward outputs to differentiate (default: all); ``wrt``: the inputs whose gradients
    it computes (default: every input without a ``density`` declaration).

    >>> from einsum.cascade import Cascade
    >>> b = derive_backward(Cascade.from_text("input A[M,K], B[K,N]\\nC[m,n] = sum[k] A[m,k] * B[k,n]"))
    >>> print(b.cascade.text().split("\\n", 1)[1].strip())
    input dC[M,N]
    input B[K,N]
    input A[M,K]
    dA[m,k] = sum[n] dC[m,n] * B[k,n]
    dB[k,n] = sum[m] dC[m,n] * A[m,k]
    output dA, dB
    """
    outputs = tuple(outputs) if outputs is not None else forward.outputs
    for o in outputs:
        if o not in forward.outputs:
            raise BackwardError(f"{forward.name}: {o!r} is not an output; its outputs are {', '.join(forward.outputs)}")
    if wrt is None:
        wrt = tuple(x for x in forward.inputs if x not in forward.densities)
    for x in wrt:
        if x not in forward.inputs:
            raise BackwardError(f"{forward.name}: {x!r} is not an input; its inputs are {', '.join(forward.inputs)}")
    return _Deriver(forward, outputs, tuple(wrt)).run()
