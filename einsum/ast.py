"""Frozen syntax tree of the Extended-Einsum language (see ``einsum.syntax`` for the grammar).

Every node carries the :class:`~einsum.errors.Span` of the text it came from, so later checks can point at
the offending characters. Nodes are immutable and hashable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from einsum.errors import Span

# ---------------------------------------------------------------------------------------------------------
# Index expressions: affine integer expressions of rank variables and rank sizes.


@dataclass(frozen=True)
class IdxVar:
    """A rank variable (lower case), e.g. ``m1``; it ranges over rank ``M1``."""

    name: str
    span: Span = field(compare=False)

    @property
    def rank(self) -> str:
        return self.name.upper()


@dataclass(frozen=True)
class IdxSize:
    """A rank's size used as a constant (upper case), e.g. ``M0`` in ``m1*M0+m0`` or ``M1`` for the last step."""

    name: str
    span: Span = field(compare=False)


@dataclass(frozen=True)
class IdxInt:
    """An integer constant."""

    value: int
    span: Span = field(compare=False)


@dataclass(frozen=True)
class IdxBin:
    """``left op right`` with op in ``+ - *``."""

    op: str
    left: IndexExpr
    right: IndexExpr
    span: Span = field(compare=False)


IndexExpr = IdxVar | IdxSize | IdxInt | IdxBin


# ---------------------------------------------------------------------------------------------------------
# Value expressions.


@dataclass(frozen=True)
class Access:
    """A tensor element ``T[i0, i1, ...]``."""

    tensor: str
    indices: tuple[IndexExpr, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Number:
    """A floating-point constant (``inf`` allowed)."""

    value: float
    span: Span = field(compare=False)


@dataclass(frozen=True)
class BinOp:
    """A map action between two operands: ``+ - * /``."""

    op: str
    left: Expr
    right: Expr
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Neg:
    """Unary minus."""

    operand: Expr
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Compare:
    """A comparison of two index expressions, used as the condition of ``where``."""

    op: str
    left: IndexExpr
    right: IndexExpr
    span: Span = field(compare=False)


@dataclass(frozen=True)
class Call:
    """A named function: a map action (``max(a, b)``), unary compute (``exp(x)``) or ``where(cond, a, b)``."""

    func: str
    args: tuple[Expr | Compare, ...]
    span: Span = field(compare=False)


Expr = Access | Number | BinOp | Neg | Call


# ---------------------------------------------------------------------------------------------------------
# Statements: one per line.


@dataclass(frozen=True)
class InputDecl:
    """``input Q[B,H,E,P]``: an input tensor and its ranks in array order."""

    tensor: str
    ranks: tuple[str, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class OutputDecl:
    """``output AV``: tensors returned by the cascade (default: those no Einsum reads)."""

    tensors: tuple[str, ...]
    spans: tuple[Span, ...] = field(compare=False)
    span: Span = field(compare=False)


@dataclass(frozen=True)
class PartitionDecl:
    """``partition M = M1 * M0``: rank M split into M1 (outer) x M0 (inner), m = m1*M0 + m0."""

    rank: str
    parts: tuple[str, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True)
class InitDecl:
    """``init RM[b,h,0,p] = -inf``: initial value of a recurrence over an iterative rank."""

    target: Access
    value: float
    span: Span = field(compare=False)


@dataclass(frozen=True)
class ParamDecl:
    """``param W = 4096``: the size a rank takes when none is given (a window, a block, a split count)."""

    rank: str
    value: int
    span: Span = field(compare=False)


@dataclass(frozen=True)
class DensityDecl:
    """``density BM = 0.25``: the expected fraction of nonzeros of an input mask, for the analyses and mappers."""

    tensor: str
    value: float
    span: Span = field(compare=False)


@dataclass(frozen=True)
class EinsumStmt:
    """``OUT[...] = [reduce[vars]] expr``: one Extended Einsum."""

    output: Access
    reduce_op: str | None
    reduce_vars: tuple[IdxVar, ...]
    expr: Expr
    text: str
    span: Span = field(compare=False)


Statement = InputDecl | OutputDecl | PartitionDecl | InitDecl | ParamDecl | DensityDecl | EinsumStmt


@dataclass(frozen=True)
class Program:
    """A parsed cascade text."""

    statements: tuple[Statement, ...]
    source: str
    origin: str = "<einsum>"


def walk(expr: Expr | Compare):
    """Yield every node of a value expression, parents before children."""
    yield expr
    if isinstance(expr, BinOp):
        yield from walk(expr.left)
        yield from walk(expr.right)
    elif isinstance(expr, Neg):
        yield from walk(expr.operand)
    elif isinstance(expr, Call):
        for arg in expr.args:
            yield from walk(arg)


def index_nodes(idx: IndexExpr):
    """Yield every node of an index expression."""
    yield idx
    if isinstance(idx, IdxBin):
        yield from index_nodes(idx.left)
        yield from index_nodes(idx.right)


def index_vars(idx: IndexExpr) -> list[IdxVar]:
    """The rank variables of an index expression, in textual order."""
    return [n for n in index_nodes(idx) if isinstance(n, IdxVar)]


def format_index(idx: IndexExpr) -> str:
    """Canonical text of an index expression."""
    if isinstance(idx, IdxVar | IdxSize):
        return idx.name
    if isinstance(idx, IdxInt):
        return str(idx.value)
    left, right = format_index(idx.left), format_index(idx.right)
    if idx.op == "*":
        left = f"({left})" if isinstance(idx.left, IdxBin) and idx.left.op != "*" else left
        right = f"({right})" if isinstance(idx.right, IdxBin) and idx.right.op != "*" else right
        return f"{left}*{right}"
    if idx.op == "-" and isinstance(idx.right, IdxBin) and idx.right.op != "*":
        right = f"({right})"
    return f"{left}{idx.op}{right}"
