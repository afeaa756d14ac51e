"""The interpreter's fast evaluation (strided views, contractions, pieces, chunks of a free rank) against the
plain broadcasting evaluation it replaced, kept here verbatim as the reference; and its memory estimate."""

import os
import signal
import time
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workloads
from einsum import interpreter
from einsum.ast import Access, BinOp, Compare, Expr, Neg, Number
from einsum.cascade import Cascade, Einsum, bind_index
from einsum.errors import ShapeError
from einsum.interpreter import (
    _COMPARE,
    _REDUCE,
    BINARY_OPS,
    FUNCTIONS,
    _execution_groups,
    memory_bytes,
    plan,
    random_inputs,
    run,
)

# ---------------------------------------------------------------------------------------------------------
# The reference: the interpreter before issue 16, each Einsum broadcast over its whole iteration space.


def reference_run(cascade: Cascade, sizes: Mapping[str, int], inputs: Mapping[str, np.ndarray]) -> dict:
    """Every tensor of the cascade, by the plain broadcasting evaluation."""
    full = cascade.rank_sizes(sizes)
    values = {name: np.asarray(inputs[name]).astype(np.float64, copy=False) for name in cascade.inputs}
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
                _reference_evaluate(group[0], full, values, {})
                continue
            var = cascade.recurrences[group[0].name]
            for step in range(full[var.upper()]):
                for e in group:
                    _reference_evaluate(e, full, values, {var: step})
    return values


def _reference_evaluate(e: Einsum, sizes, values: dict[str, np.ndarray], fixed) -> None:
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


# ---------------------------------------------------------------------------------------------------------
# Comparison


def assert_same(got: np.ndarray, ref: np.ndarray, name: str) -> None:
    """Equal to 1e-12 relative (absolute: 1e-12 of the tensor's largest finite magnitude); the same
    infinities and NaNs."""
    assert got.shape == ref.shape, name
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{name}: NaNs differ")
    np.testing.assert_array_equal(got[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)], err_msg=name)
    scale = float(np.abs(ref[finite]).max(initial=0.0))
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-12, atol=1e-12 * scale, err_msg=name)


SMALL = {"M": 48, "E": 3, "F": 2}
"""Small sizes for every registered cascade (its defaults fill in the rest), with more than one tile or
block along each partitioned rank."""
SMALL_PARTS = {
    "block-sparse": {"M0": 16, "P0": 16},
    "moba": {"M0": 16, "P0": 16},
    "decode-splitk": {"S": 4, "M0": 4},
    "s2-attention": {"M0": 3},
    "gqa": {"H": 4, "G": 2},
    "decode": {"H": 4, "G": 2},
}


def small_sizes(name: str) -> dict[str, int]:
    entry = workloads.get_cascade(name)
    cascade = entry.cascade
    given = dict(SMALL)
    if "H" in cascade.ranks:
        given["H"] = 2
    for rank in ("L", "ER"):
        if rank in cascade.ranks:
            given[rank] = 3
    if "M0" in cascade.ranks:
        given["M0"] = 8
    given.update(SMALL_PARTS.get(name, {}))
    return entry.sizes(given)


def inputs_for(cascade: Cascade, sizes: Mapping[str, int], seed: int) -> dict[str, np.ndarray]:
    inputs = random_inputs(cascade, sizes, seed)
    for name in cascade.densities:  # an input mask: ones and zeros (log of it is 0 or -inf)
        inputs[name] = (inputs[name] > 0).astype(np.float64)
    return inputs


MODES = {
    "default": {},
    "tiny pieces": {"PIECE_BYTES": 128},
    "chunks": {"CHUNK_BYTES": 1, "MIN_CHUNK": 5},
    "chunks and pieces": {"CHUNK_BYTES": 1, "MIN_CHUNK": 7, "PIECE_BYTES": 512},
}
"""Budgets that force each way of splitting the work on small sizes: pieces split output and reduced
variables down to pieces of 4 points; chunks of 5 or 7 values of the free rank (the last one shorter)."""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(workloads.CASCADES))
def test_registered_cascades_match_the_broadcasting_evaluation(name, mode, monkeypatch):
    for key, value in MODES[mode].items():
        monkeypatch.setattr(interpreter, key, value)
    cascade = workloads.get_cascade(name).cascade
    sizes = small_sizes(name)
    inputs = inputs_for(cascade, sizes, seed=len(name))
    ref = reference_run(cascade, sizes, inputs)
    got = run(cascade, sizes, inputs)
    assert set(got) == set(cascade.outputs)
    for out in cascade.outputs:
        assert_same(got[out], ref[out], out)
    if "chunks" in mode:
        chunking = plan(cascade, cascade.rank_sizes(sizes))
        assert chunking.rank is None or chunking.rank in interpreter.free_ranks(cascade)
        if "P" in interpreter.free_ranks(cascade) and sizes["P"] > 5 and "linear" not in name:
            assert chunking.rank == "P", chunking
    else:
        every = run(cascade, sizes, inputs, keep_intermediates=True)
        for tensor in cascade.tensors:
            assert_same(every[tensor], ref[tensor], tensor)


@pytest.mark.parametrize("name", ["fusemax-causal", "linear-attention-causal", "sliding-window"])
@settings(max_examples=15, deadline=None)
@given(
    m0=st.sampled_from([1, 2, 4]),
    m1=st.integers(1, 5),
    p=st.integers(1, 9),
    e=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
    chunk=st.sampled_from([None, 1, 2, 3]),
)
def test_random_shapes_match(name, m0, m1, p, e, seed, scale, chunk):
    entry = workloads.get_cascade(name)
    given = {"B": 1, "H": 2, "M": m0 * m1, "M0": m0, "P": min(p, m0 * m1), "E": e, "F": 2, "W": 3}
    sizes = entry.sizes({r: n for r, n in given.items() if r in entry.cascade.ranks})
    inputs = random_inputs(entry.cascade, sizes, seed)
    inputs["Q"] = inputs["Q"] * scale
    ref = reference_run(entry.cascade, sizes, inputs)
    with pytest.MonkeyPatch.context() as budgets:
        if chunk is not None:
            budgets.setattr(interpreter, "CHUNK_BYTES", 1)
            budgets.setattr(interpreter, "MIN_CHUNK", chunk)
        got = run(entry.cascade, sizes, inputs)
    for out in entry.cascade.outputs:
        assert_same(got[out], ref[out], out)


# ---------------------------------------------------------------------------------------------------------
# Random Einsums: every construct of the language in sums, maxima, minima and maps

LEAVES = ("X[i,j]", "X[I-1-i,j]", "Y[j,k]", "Y[J-1-j,K-1-k]", "Z[i]", "U[k,j]", "2", "0.5", "-1.5")
CONDITIONS = ("i <= j", "i + j > K - 1", "j != k", "2*i >= j + 1", "k == 0", "i < J - j")


def expressions(depth: int = 3):
    def extend(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda a: f"-{a}"),
            st.tuples(st.sampled_from(["exp", "relu", "sigmoid", "softplus", "sqrt", "log"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"
            ),
            st.tuples(st.sampled_from(["max", "min"]), inner, inner).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            st.tuples(st.sampled_from(CONDITIONS), inner, st.one_of(inner, st.sampled_from(["0", "-inf", "inf"]))).map(
                lambda t: f"where({t[0]}, {t[1]}, {t[2]})"
            ),
        )

    return st.recursive(st.sampled_from(LEAVES), extend, max_leaves=6)


@st.composite
def products(draw):
    """A product of two to four expressions, the shape the contraction takes."""
    factors = draw(st.lists(expressions(), min_size=2, max_size=4))
    ops = [draw(st.sampled_from(["*", "*", "/"])) for _ in factors[1:]]
    text = factors[0]
    for op, f in zip(ops, factors[1:], strict=True):
        text = f"{text} {op} {f}"
    return f"-{text}" if draw(st.booleans()) else text


@settings(max_examples=200, deadline=None)
@given(
    body=st.one_of(expressions(), products()),
    op=st.sampled_from(["sum", "max", "min", None]),
    then=st.sampled_from(["sum", "max", "min"]),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 3)),
    seed=st.integers(0, 2**31 - 1),
    pieces=st.sampled_from([None, 8, 100]),
)
def test_random_einsums_match(body, op, then, shape, seed, pieces):
    if op and "j" not in body:
        body = f"({body}) * X[i,j]"  # the reduced variable appears on the right-hand side
    first = f"T[i,k] = {op}[j] {body}" if op else f"T[i,j,k] = {body}"
    second = f"R[k] = {then}[i] T[i,k] * Z[i]" if op else f"R[k] = {then}[i,j] T[i,j,k] * X[i,j] / U[k,j]"
    every = "A[k] = sum[i,j] X[i,j] * Y[j,k] * Z[i] * U[k,j]"  # every input is read (and declares its ranks)
    text = f"input X[I,J], Y[J,K], Z[I], U[K,J]\n{first}\n{second}\n{every}\noutput T, R, A"
    cascade = Cascade.from_text(text)
    sizes = dict(zip("IJK", shape, strict=True))
    inputs = random_inputs(cascade, sizes, seed)
    ref = reference_run(cascade, sizes, inputs)
    with pytest.MonkeyPatch.context() as budgets:
        if pieces is not None:
            budgets.setattr(interpreter, "PIECE_BYTES", pieces)
        got = run(cascade, sizes, inputs)
    for out in ("T", "R", "A"):
        assert_same(got[out], ref[out], f"{out} of\n{text}")


def test_contraction_applies_to_sums_of_products_only():
    c = Cascade.from_text(
        "input A[M,K], B[K,N], C[M]\n"
        "P[m,n] = sum[k] -A[m,k] * B[k,n] / C[m]\n"  # a product of three factors and -1
        "S[m] = sum[n] P[m,n]\n"  # one factor: broadcast
        "X[m] = max[n] P[m,n] * C[m]\n"  # not a sum
        "W[m] = sum[k,n] where(k < n, A[m,k], 0) * exp(B[k,n])\n"  # factors that are expressions
        "V[m] = sum[n] where(n < 2, C[m], 0) * C[m] * 2\n"  # n only in a mask condition
        "output S, X, W, V"
    )
    factors = {e.name: interpreter.contraction_factors(e) for e in c.einsums}
    assert len(factors["P"]) == 4 and factors["S"] is None and factors["X"] is None
    assert len(factors["W"]) == 2 and len(factors["V"]) == 3
    sizes = {"M": 3, "K": 4, "N": 5}
    inputs = random_inputs(c, sizes, seed=1)
    ref = reference_run(c, sizes, inputs)
    got = run(c, sizes, inputs, keep_intermediates=True)
    for name in c.tensors:
        assert_same(got[name], ref[name], name)


def test_sums_of_products_with_infinite_factors_are_broadcast(monkeypatch):
    """Reordering products and sums changes what infinities give (inf * 0 before or after a sum): such a piece
    takes the broadcast evaluation."""
    c = Cascade.from_text(
        "input A[M,N], B[N]\nY[m] = sum[n] where(n < 2, A[m,n], inf) * B[n]\nZ[m] = sum[n] A[m,n] * B[n] / 0\n"
        "output Y, Z"
    )
    sizes = {"M": 3, "N": 4}
    inputs = random_inputs(c, sizes, seed=2)
    inputs["B"][1] = 0.0
    calls, broadcast = [], interpreter._Bound.broadcast
    monkeypatch.setattr(interpreter._Bound, "broadcast", lambda b, *a: calls.append(b.e.name) or broadcast(b, *a))
    ref, got = reference_run(c, sizes, inputs), run(c, sizes, inputs)
    assert calls == ["Y", "Z"]
    for name in ("Y", "Z"):
        assert_same(got[name], ref[name], name)


# ---------------------------------------------------------------------------------------------------------
# The memory estimate


def test_fusemax_heads_memory(monkeypatch):
    """A 4K head holds everything at once, a 64K head chunks the queries, a 1M head is refused (on a
    machine with 24 GiB available) with the sizes and the largest Einsum named."""
    monkeypatch.setattr(interpreter, "available_memory_bytes", lambda: 24.0 * 2**30)
    entry = workloads.get_cascade("fusemax")
    gib = 2.0**30
    head4k = entry.sizes({"B": 1, "H": 1, "M": 4096, "P": 4096, "E": 64, "F": 64})
    assert plan(entry.cascade, head4k).rank is None
    tensors, evaluation, name = memory_bytes(entry.cascade, head4k)
    assert tensors + evaluation < 0.6 * gib and name == "QK"
    head64k = entry.sizes({"B": 1, "H": 1, "M": 65536, "P": 65536, "E": 64, "F": 64})
    chunking = plan(entry.cascade, head64k)
    assert chunking.rank == "P" and chunking.chunk == interpreter.MIN_CHUNK
    assert {"QK", "SLN", "RNV"} <= chunking.chunked and "AV" not in chunking.chunked
    tensors, evaluation, _ = memory_bytes(entry.cascade, head64k)
    assert 2 * gib < tensors + evaluation < 5 * gib
    head1m = entry.sizes({"B": 1, "H": 1, "M": 2**20, "P": 2**20, "E": 64, "F": 64})
    with pytest.raises(ShapeError) as refused:
        run(entry.cascade, head1m, {})
    message = str(refused.value)
    assert "interpreting it at these sizes needs about" in message and "M=1048576" in message
    assert "P=1048576" in message and "held for 2048 of the 1048576 values of P" in message
    assert "Einsum QK" in message and "24.0 GiB is available" in message


def test_keep_intermediates_holds_everything():
    entry = workloads.get_cascade("fusemax")
    head = entry.sizes({"B": 1, "H": 1, "M": 65536, "P": 65536, "E": 64, "F": 64})
    assert plan(entry.cascade, head, keep_intermediates=True).rank is None
    held = memory_bytes(entry.cascade, head, plan(entry.cascade, head, keep_intermediates=True))[0]
    assert held > 64 * 2.0**30  # QK and SLN: 32 GiB each


# ---------------------------------------------------------------------------------------------------------
# Chunks of a free rank


def test_free_ranks():
    assert interpreter.free_ranks(workloads.get_cascade("fusemax").cascade) == ("B", "F", "H", "P")
    assert "P" not in interpreter.free_ranks(workloads.get_cascade("block-sparse").cascade)  # partitioned
    assert "H" not in interpreter.free_ranks(workloads.get_cascade("gqa").cascade)  # partitioned
    c = Cascade.from_text("input X[M,P]\nS[p] = sum[m] X[m,p]\nT[m] = max[p] X[m,p]\noutput S, T")
    assert interpreter.free_ranks(c) == ()  # P reduced by T, M by S
    c = Cascade.from_text("input X[M,P], Y[P,M]\nS[m,p] = X[m,p] * Y[p,m]\nR[m] = sum[p] S[m,p]")
    assert interpreter.free_ranks(c) == ("M",)


def test_a_read_of_a_step_not_yet_written_sees_zeros_in_every_chunk(monkeypatch):
    """T[N-1] is written at the last step only: before that the recurrence reads zeros, also in a chunk
    whose buffer the previous chunk filled."""
    c = Cascade.from_text(
        "input X[N,P]\ninit S[0,p] = 1\nT[n,p] = S[n,p] * X[n,p]\nS[n+1,p] = S[n,p] + T[N-1,p]\noutput S"
    )
    assert interpreter._stale_reads(c) == {"T"}
    monkeypatch.setattr(interpreter, "CHUNK_BYTES", 1)
    monkeypatch.setattr(interpreter, "MIN_CHUNK", 2)
    sizes = {"N": 4, "P": 7}
    assert plan(c, sizes) == interpreter.Chunking("P", 2, frozenset({"T"}))
    inputs = random_inputs(c, sizes, seed=5)
    assert_same(run(c, sizes, inputs)["S"], reference_run(c, sizes, inputs)["S"], "S")


def test_a_forked_child_evaluates_in_threads_of_its_own(monkeypatch):
    """Broadcast pieces run in a thread pool; a child forked after the parent made its pool has none of its
    threads and must make its own (else it waits forever)."""
    monkeypatch.setattr(interpreter, "PIECE_BYTES", 256)
    entry = workloads.get_cascade("fusemax")
    sizes = entry.sizes({"M": 64, "E": 4, "F": 4, "M0": 8})
    inputs = random_inputs(entry.cascade, sizes)
    expected = run(entry.cascade, sizes, inputs)["AV"]
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 when it computes the same
        same = False
        try:
            same = np.array_equal(run(entry.cascade, sizes, inputs)["AV"], expected)
        finally:
            os._exit(0 if same else 1)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish in 60 s")
    assert os.waitstatus_to_exitcode(done[1]) == 0
