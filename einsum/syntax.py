"""Text syntax of Extended Einsums: one statement per line, ``#`` starts a comment.

Grammar (``[...]`` literal brackets, ``{x}`` = zero or more)::

    line      := 'input' decl {',' decl} | 'output' NAME {',' NAME}
               | 'partition' RANK '=' RANK '*' RANK {'*' RANK}
               | 'init' access '=' number
               | 'param' RANK '=' integer                      # the rank's size unless one is given
               | 'density' NAME '=' number                     # expected fraction of nonzeros of an input mask
               | access '=' [reduce] expr
    decl      := NAME '[' RANK {',' RANK} ']'
    reduce    := ('sum' | 'max' | 'min') '[' var {',' var} ']'      # ranks that vanish from the output
    expr      := term {('+' | '-') term}
    term      := unary {('*' | '/') unary}
    unary     := '-' unary | atom
    atom      := number | 'inf' | access | func '(' arg {',' arg} ')' | '(' expr ')'
    arg       := expr | index cmp index                              # a comparison only inside where()
    access    := NAME '[' index {',' index} ']'
    index     := affine expression of variables, rank sizes and integers, e.g. m1*M0+m0, m1+1, M1, 0

Naming rule: ranks are UPPER case (``M``, ``M1``), their variables lower case (``m``, ``m1``); variable
``m1`` ranges over rank ``M1``. An upper-case name inside an index is that rank's size, a constant.

Functions: ``exp``, ``log``, ``sqrt``, ``sigmoid``, ``softplus``, ``relu`` (unary compute), ``max``, ``min``
(binary map) and ``where(cond, a, b)``; ``step(x)`` (1 where x > 0, else 0, NaN included: the derivative of
``relu`` and of the max/min selections, which :mod:`einsum.backward` writes; counted as a ``select``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from einsum.ast import (
    Access,
    BinOp,
    Call,
    Compare,
    DensityDecl,
    EinsumStmt,
    Expr,
    IdxBin,
    IdxInt,
    IdxSize,
    IdxVar,
    IndexExpr,
    InitDecl,
    InputDecl,
    Neg,
    Number,
    OutputDecl,
    ParamDecl,
    PartitionDecl,
    Program,
    Statement,
)
from einsum.errors import EinsumSyntaxError, Span

REDUCE_OPS = ("sum", "max", "min")
UNARY_FUNCS = ("exp", "log", "sqrt", "sigmoid", "softplus", "relu")
BINARY_FUNCS = ("max", "min")
SELECT_FUNCS = ("step",)
"""Unary functions that select rather than compute (a comparison with 0): counted as the ``select`` op kind."""
KEYWORDS = (
    "input", "output", "partition", "init", "param", "density", "where", "inf", *REDUCE_OPS, *UNARY_FUNCS,
    *SELECT_FUNCS,
)  # fmt: skip
COMPARISONS = ("<=", ">=", "==", "!=", "<", ">")

RANK_RE = re.compile(r"[A-Z][A-Z0-9_]*\Z")
VAR_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
NAMING_RULE = "ranks are UPPER case (M, M1) and their variables lower case (m, m1)"

_TOKEN_RE = re.compile(
    r"""(?P<ws>[ \t]+)
      | (?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|==|!=|[-+*/=<>\[\](),])""",
    re.VERBOSE | re.ASCII,  # digits are 0-9 only: a full-width or other script's digit is named as unexpected
)


@dataclass(frozen=True)
class Token:
    kind: str  # 'number', 'name', 'op', 'end'
    text: str
    col: int

    @property
    def end_col(self) -> int:
        return self.col + max(1, len(self.text))


def _describe(tok: Token) -> str:
    return "end of line" if tok.kind == "end" else repr(tok.text)


MAX_NESTING = 100
"""Deepest nesting of parentheses and leading signs in one expression (checked while parsing)."""
MAX_DEPTH = 128
"""Deepest expression tree of one Einsum (a chain ``a + b + c`` is a tree two deep): every analysis walks the
tree recursively, so a bound keeps any input within Python's stack."""


def _depth(root: object) -> int:
    """Depth of an expression tree, walked without recursion (the tree may be deeper than Python's stack)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, BinOp | IdxBin | Compare):
            stack += [(node.left, depth + 1), (node.right, depth + 1)]
        elif isinstance(node, Neg):
            stack.append((node.operand, depth + 1))
        elif isinstance(node, Call):
            stack += [(a, depth + 1) for a in node.args]
        elif isinstance(node, Access):
            stack += [(i, depth + 1) for i in node.indices]
    return deepest


class _LineParser:
    """Recursive-descent parser for one line."""

    def __init__(self, text: str, lineno: int, source: str, origin: str):
        self.text = text
        self.lineno = lineno
        self.source = source
        self.origin = origin
        self.tokens = self._tokenize()
        self.pos = 0
        self.depth = 0  # open parentheses and leading signs: bounded, so no input exhausts Python's stack

    # -- errors and tokens ---------------------------------------------------------------------------------
    def nest(self, tok: Token) -> None:
        """Enter one more level of parentheses or signs at ``tok``; too deep is a syntax error."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(
                f"nested more than {MAX_NESTING} levels deep (parentheses or signs); write the expression as "
                "several Einsums",
                tok.col,
                tok.end_col,
            )

    def error(self, message: str, col: int, end_col: int | None = None) -> EinsumSyntaxError:
        return EinsumSyntaxError(message, self.source, Span(self.lineno, col, end_col or col + 1), self.origin)

    def _tokenize(self) -> list[Token]:
        tokens: list[Token] = []
        pos = 0
        while pos < len(self.text):
            if self.text[pos] == "#":
                break
            m = _TOKEN_RE.match(self.text, pos)
            if m is None:
                raise self.error(
                    f"unexpected character {self.text[pos]!r}; expected a name, a number or one of "
                    "+ - * / = < > [ ] ( ) ,",
                    pos,
                )
            if m.lastgroup != "ws":
                tokens.append(Token(m.lastgroup, m.group(), pos))
            pos = m.end()
        end = len(self.text.split("#", 1)[0].rstrip())
        tokens.append(Token("end", "", end))
        return tokens

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return tok

    def expect_op(self, op: str, what: str) -> Token:
        if self.tok.kind == "op" and self.tok.text == op:
            return self.advance()
        raise self.error(f"expected {what}, found {_describe(self.tok)}", self.tok.col, self.tok.end_col)

    def at_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in ops

    def span_from(self, start: Token) -> Span:
        prev = self.tokens[self.pos - 1] if self.pos > 0 else start
        return Span(self.lineno, start.col, max(prev.end_col, start.col + 1))

    def expect_end(self) -> None:
        if self.tok.kind != "end":
            raise self.error(
                f"unexpected {_describe(self.tok)} after a complete statement; one statement per line",
                self.tok.col,
                self.tok.end_col,
            )

    # -- names ---------------------------------------------------------------------------------------------
    def tensor_name(self) -> Token:
        tok = self.tok
        if tok.kind != "name":
            raise self.error(f"expected a tensor name, found {_describe(tok)}", tok.col, tok.end_col)
        if tok.text in KEYWORDS:
            raise self.error(f"{tok.text!r} is a reserved word and cannot name a tensor", tok.col, tok.end_col)
        return self.advance()

    def rank_name(self, context: str) -> Token:
        tok = self.tok
        if tok.kind != "name":
            raise self.error(f"expected a rank name {context}, found {_describe(tok)}", tok.col, tok.end_col)
        if not RANK_RE.match(tok.text):
            raise self.error(
                f"{tok.text!r} is not a rank name: {NAMING_RULE}; write {tok.text.upper()!r} here",
                tok.col,
                tok.end_col,
            )
        return self.advance()

    def variable(self, context: str) -> IdxVar:
        tok = self.tok
        if tok.kind != "name":
            raise self.error(f"expected a rank variable {context}, found {_describe(tok)}", tok.col, tok.end_col)
        if not VAR_RE.match(tok.text):
            raise self.error(
                f"{tok.text!r} is not a rank variable: {NAMING_RULE}; write {tok.text.lower()!r} here",
                tok.col,
                tok.end_col,
            )
        self.advance()
        return IdxVar(tok.text, Span(self.lineno, tok.col, tok.end_col))

    # -- statements ----------------------------------------------------------------------------------------
    def statement(self) -> Statement | None:
        tok = self.tok
        if tok.kind == "end":
            return None
        handlers = {
            "input": self.input_decl,
            "output": self.output_decl,
            "partition": self.partition_decl,
            "init": self.init_decl,
            "param": self.param_decl,
            "density": self.density_decl,
        }
        if tok.kind == "name" and tok.text in handlers:
            stmt = handlers[tok.text]()
        elif tok.kind == "name" and self.peek().kind == "name":
            raise self.error(
                f"unknown statement {tok.text!r}; a line is an Einsum (T[...] = ...) or starts with "
                "input, output, partition, init, param or density",
                tok.col,
                tok.end_col,
            )
        else:
            stmt = self.einsum()
        self.expect_end()
        return stmt

    def input_decl(self) -> Statement:
        start = self.advance()
        decls = [self.one_input(start)]
        while self.at_op(","):
            self.advance()
            decls.append(self.one_input(self.tok))
        if len(decls) == 1:
            return decls[0]
        return _MultiInput(tuple(decls))  # type: ignore[return-value]

    def one_input(self, start: Token) -> InputDecl:
        name = self.tensor_name()
        self.expect_op("[", f"'[' and the ranks of input {name.text}, e.g. {name.text}[B,H,E,P]")
        ranks = [self.rank_name(f"in the declaration of {name.text}").text]
        while self.at_op(","):
            self.advance()
            ranks.append(self.rank_name(f"in the declaration of {name.text}").text)
        self.expect_op("]", "',' or ']'")
        return InputDecl(name.text, tuple(ranks), self.span_from(start))

    def output_decl(self) -> OutputDecl:
        start = self.advance()
        names = [self.tensor_name()]
        while self.at_op(","):
            self.advance()
            names.append(self.tensor_name())
        spans = tuple(Span(self.lineno, t.col, t.end_col) for t in names)
        return OutputDecl(tuple(t.text for t in names), spans, self.span_from(start))

    def partition_decl(self) -> PartitionDecl:
        start = self.advance()
        rank = self.rank_name("to partition")
        self.expect_op("=", f"'=' as in: partition {rank.text} = {rank.text}1 * {rank.text}0")
        parts = [self.rank_name("of the partition").text]
        while self.at_op("*"):
            self.advance()
            parts.append(self.rank_name("of the partition").text)
        if len(parts) < 2:
            raise self.error(
                f"a partition splits a rank into two or more ranks, e.g. {rank.text} = "
                f"{rank.text}1 * {rank.text}0; expected '*'",
                self.tok.col,
                self.tok.end_col,
            )
        return PartitionDecl(rank.text, tuple(parts), self.span_from(start))

    def param_decl(self) -> ParamDecl:
        start = self.advance()
        rank = self.rank_name("to give a default size")
        self.expect_op("=", f"'=' and a size, as in: param {rank.text} = 4096")
        tok = self.tok
        if tok.kind != "number" or not tok.text.isdigit() or int(tok.text) < 1:
            raise self.error(
                f"the size of {rank.text} must be a positive integer, found {_describe(tok)}", tok.col, tok.end_col
            )
        self.advance()
        return ParamDecl(rank.text, int(tok.text), self.span_from(start))

    def density_decl(self) -> DensityDecl:
        start = self.advance()
        name = self.tensor_name()
        self.expect_op("=", f"'=' and the fraction of nonzeros of {name.text}, as in: density {name.text} = 0.25")
        tok = self.tok
        value = float(tok.text) if tok.kind == "number" else -1.0
        if not 0.0 < value <= 1.0:
            raise self.error(
                f"the density of {name.text} is a fraction of nonzeros in (0, 1], found {_describe(tok)}",
                tok.col,
                tok.end_col,
            )
        self.advance()
        return DensityDecl(name.text, value, self.span_from(start))

    def init_decl(self) -> InitDecl:
        start = self.advance()
        target = self.access()
        self.expect_op("=", "'=' and the initial value")
        neg = False
        if self.at_op("-"):
            self.advance()
            neg = True
        tok = self.tok
        if tok.kind == "number":
            value = float(tok.text)
        elif tok.kind == "name" and tok.text == "inf":
            value = float("inf")
        else:
            raise self.error(
                f"expected a number or inf as the initial value, found {_describe(tok)}", tok.col, tok.end_col
            )
        self.advance()
        return InitDecl(target, -value if neg else value, self.span_from(start))

    def einsum(self) -> EinsumStmt:
        start = self.tok
        output = self.access()
        self.expect_op("=", "'=' after the output tensor")
        reduce_op = None
        reduce_vars: list[IdxVar] = []
        if self.tok.kind == "name" and self.tok.text in REDUCE_OPS and self.peek().text == "[":
            reduce_op = self.advance().text
            self.advance()
            reduce_vars.append(self.variable(f"to reduce with {reduce_op}"))
            while self.at_op(","):
                self.advance()
                reduce_vars.append(self.variable(f"to reduce with {reduce_op}"))
            self.expect_op("]", "',' or ']' closing the reduced variables")
        expr = self.expr()
        span = self.span_from(start)
        depth = _depth(expr)
        if depth > MAX_DEPTH:
            raise self.error(
                f"the expression is {depth} levels deep (each operator of a chain, call or parenthesis is one); "
                f"at most {MAX_DEPTH}: write it as several Einsums",
                span.col,
                span.end_col,
            )
        return EinsumStmt(output, reduce_op, tuple(reduce_vars), expr, self.text[span.col : span.end_col].strip(), span)

    # -- value expressions ---------------------------------------------------------------------------------
    def expr(self) -> Expr:
        start = self.tok
        left = self.term()
        while self.at_op("+", "-"):
            op = self.advance().text
            right = self.term()
            left = BinOp(op, left, right, self.span_from(start))
        return left

    def term(self) -> Expr:
        start = self.tok
        left = self.unary()
        while self.at_op("*", "/"):
            op = self.advance().text
            right = self.unary()
            left = BinOp(op, left, right, self.span_from(start))
        return left

    def unary(self) -> Expr:
        if self.at_op("-"):
            start = self.advance()
            self.nest(start)
            operand = self.unary()
            self.depth -= 1
            if isinstance(operand, Number):  # a negative constant, not an operation
                return Number(-operand.value, self.span_from(start))
            return Neg(operand, self.span_from(start))
        return self.atom()

    def atom(self) -> Expr:
        tok = self.tok
        if tok.kind == "number":
            if not math.isfinite(float(tok.text)):
                raise self.error(
                    f"{tok.text} is not a finite number (the largest is about 1.8e308; write inf for infinity)",
                    tok.col,
                    tok.end_col,
                )
            self.advance()
            return Number(float(tok.text), Span(self.lineno, tok.col, tok.end_col))
        if self.at_op("("):
            self.nest(self.advance())
            inner = self.expr()
            self.expect_op(")", "')'")
            self.depth -= 1
            return inner
        if tok.kind == "name":
            if tok.text == "inf":
                self.advance()
                return Number(float("inf"), Span(self.lineno, tok.col, tok.end_col))
            nxt = self.peek()
            if nxt.text == "(":
                return self.call()
            if nxt.text == "[":
                if tok.text in REDUCE_OPS:
                    raise self.error(
                        f"a reduction {tok.text}[...] must come first on the right-hand side, "
                        f"right after '=' (e.g. X[p] = {tok.text}[m] Y[m,p])",
                        tok.col,
                        tok.end_col,
                    )
                return self.access()
            if RANK_RE.match(tok.text) or VAR_RE.match(tok.text):
                raise self.error(
                    f"expected '[' after tensor {tok.text!r}: tensors are written with their indices, "
                    f"e.g. {tok.text}[m,p]",
                    tok.col,
                    tok.end_col,
                )
        raise self.error(
            f"expected a tensor access, a number or a function call, found {_describe(tok)}",
            tok.col,
            tok.end_col,
        )

    def call(self) -> Call:
        start = self.advance()
        func = start.text
        known = (*UNARY_FUNCS, *SELECT_FUNCS, *BINARY_FUNCS, "where")
        if func not in known:
            raise self.error(
                f"unknown function {func!r}; known functions: {', '.join(sorted(set(known)))}",
                start.col,
                start.end_col,
            )
        self.advance()  # '('
        args: list[Expr | Compare] = []
        if func == "where":
            args.append(self.comparison())
            self.expect_op(",", "',' after the condition of where(cond, a, b)")
        args.append(self.expr())
        while self.at_op(","):
            self.advance()
            args.append(self.expr())
        close = self.tok
        self.expect_op(")", f"',' or ')' closing {func}(")
        arity = 1 if func in (*UNARY_FUNCS, *SELECT_FUNCS) else (2 if func in BINARY_FUNCS else 3)
        if len(args) != arity:
            raise self.error(
                f"{func}() takes {arity} argument{'s' if arity > 1 else ''}, got {len(args)}",
                start.col,
                close.end_col,
            )
        return Call(func, tuple(args), self.span_from(start))

    def comparison(self) -> Compare:
        start = self.tok
        left = self.index()
        if not self.at_op(*COMPARISONS):
            raise self.error(
                f"expected a comparison ({' '.join(COMPARISONS)}) of index expressions, e.g. where(m <= p, ...); "
                f"found {_describe(self.tok)}",
                self.tok.col,
                self.tok.end_col,
            )
        op = self.advance().text
        right = self.index()
        return Compare(op, left, right, self.span_from(start))

    # -- tensor accesses and index expressions -------------------------------------------------------------
    def access(self) -> Access:
        name = self.tensor_name()
        self.expect_op("[", f"'[' after tensor {name.text!r}")
        if self.at_op("]"):
            raise self.error(
                f"tensor {name.text} needs at least one index, e.g. {name.text}[p]",
                self.tok.col,
                self.tok.end_col,
            )
        indices = [self.index()]
        while self.at_op(","):
            self.advance()
            indices.append(self.index())
        self.expect_op("]", "',' or ']' in the index list")
        return Access(name.text, tuple(indices), self.span_from(name))

    def index(self) -> IndexExpr:
        start = self.tok
        left = self.index_term()
        while self.at_op("+", "-"):
            op = self.advance().text
            right = self.index_term()
            left = IdxBin(op, left, right, self.span_from(start))
        return left

    def index_term(self) -> IndexExpr:
        start = self.tok
        left = self.index_atom()
        while self.at_op("*"):
            self.advance()
            right = self.index_atom()
            left = IdxBin("*", left, right, self.span_from(start))
        return left

    def index_atom(self) -> IndexExpr:
        tok = self.tok
        span = Span(self.lineno, tok.col, tok.end_col)
        if tok.kind == "number":
            if not tok.text.isdigit():
                raise self.error(f"an index must be an integer, found {tok.text!r}", tok.col, tok.end_col)
            self.advance()
            return IdxInt(int(tok.text), span)
        if self.at_op("("):
            self.nest(self.advance())
            inner = self.index()
            self.expect_op(")", "')'")
            self.depth -= 1
            return inner
        if tok.kind == "name":
            self.advance()
            if VAR_RE.match(tok.text):
                return IdxVar(tok.text, span)
            if RANK_RE.match(tok.text):
                return IdxSize(tok.text, span)
            raise self.error(
                f"{tok.text!r} mixes cases: {NAMING_RULE}; use {tok.text.lower()!r} to iterate over rank "
                f"{tok.text.upper()!r}",
                tok.col,
                tok.end_col,
            )
        raise self.error(
            f"expected an index (a rank variable such as m, a rank size such as M0, or an integer), "
            f"found {_describe(tok)}",
            tok.col,
            tok.end_col,
        )


@dataclass(frozen=True)
class _MultiInput:
    decls: tuple[InputDecl, ...]


def parse(source: str, origin: str = "<einsum>") -> Program:
    """Parse cascade text into a frozen :class:`~einsum.ast.Program`.

    >>> prog = parse("input A[M,K], B[K,N]\\nC[m,n] = sum[k] A[m,k] * B[k,n]")
    >>> len(prog.statements)
    3
    """
    statements: list[Statement] = []
    for lineno, line in enumerate(source.splitlines(), start=1):
        stmt = _LineParser(line, lineno, source, origin).statement()
        if isinstance(stmt, _MultiInput):
            statements.extend(stmt.decls)
        elif stmt is not None:
            statements.append(stmt)
    if not any(isinstance(s, EinsumStmt) for s in statements):
        lines = source.splitlines()
        raise EinsumSyntaxError(
            "no Einsum found; a cascade needs at least one line of the form T[...] = expression",
            source,
            Span(max(1, len(lines)), 0, 1),
            origin,
        )
    return Program(tuple(statements), source, origin)
