"""Parser properties: arbitrary text never escapes the error family; generated Einsums mean what they say."""

import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsum.ast import format_index
from einsum.cascade import Cascade
from einsum.errors import AttnscopeError, ShapeError
from einsum.interpreter import run
from einsum.syntax import parse

ALPHABET = string.ascii_letters[:8] + "MPEKmpek01+-*/=[](),<> #\n" + "sumaxinptw"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=60))
def test_any_text_parses_or_raises_a_located_error(text):
    try:
        Cascade.from_text(text)
    except AttnscopeError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["input", "X", "[", "]", "m", "M", "m1", "M0", ",", "=", "sum", "max", "exp", "(", ")", "+", "*", "1", "\n"]
        ),
        max_size=25,
    )
)
def test_token_soup_parses_or_raises_a_located_error(tokens):
    try:
        Cascade.from_text(" ".join(tokens))
    except AttnscopeError as exc:
        assert str(exc)


RANKS = ["I", "J", "K", "L"]


@st.composite
def contractions(draw):
    """A random two-operand contraction ``OUT[...] = sum[...] A[...] * B[...]`` and its numpy einsum."""
    a_ranks = draw(st.lists(st.sampled_from(RANKS), min_size=1, max_size=3, unique=True))
    b_ranks = draw(st.lists(st.sampled_from(RANKS), min_size=1, max_size=3, unique=True))
    used = sorted(set(a_ranks) | set(b_ranks))
    out = draw(st.lists(st.sampled_from(used), min_size=1, max_size=len(used), unique=True))
    reduced = [r for r in used if r not in out]
    sizes = {r: draw(st.integers(1, 4)) for r in used}

    def acc(name, ranks):
        return f"{name}[{','.join(r.lower() for r in ranks)}]"

    reduce = f"sum[{','.join(r.lower() for r in reduced)}] " if reduced else ""
    text = (
        f"input {'A'}[{','.join(a_ranks)}], B[{','.join(b_ranks)}]\n"
        f"{acc('OUT', out)} = {reduce}{acc('A', a_ranks)} * {acc('B', b_ranks)}\n"
    )
    spec = f"{''.join(a_ranks).lower()},{''.join(b_ranks).lower()}->{''.join(out).lower()}"
    return text, spec, sizes, a_ranks, b_ranks


@settings(max_examples=100, deadline=None)
@given(contractions(), st.integers(0, 1000))
def test_generated_contractions_match_numpy(case, seed):
    text, spec, sizes, a_ranks, b_ranks = case
    c = Cascade.from_text(text)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal([sizes[r] for r in a_ranks])
    b = rng.standard_normal([sizes[r] for r in b_ranks])
    np.testing.assert_allclose(run(c, sizes, {"A": a, "B": b})["OUT"], np.einsum(spec, a, b), atol=1e-12)


@given(st.integers(1, 5), st.integers(1, 5))
def test_index_expressions_round_trip_through_format(m1, m0):
    prog = parse("input K[M]\npartition M = M1 * M0\nX[m1,m0] = K[m1*M0+m0]")
    idx = prog.statements[-1].expr.indices[0]
    assert format_index(idx) == "m1*M0+m0"
    c = Cascade(prog, "x")
    sizes = c.rank_sizes({"M1": m1, "M0": m0})
    k = np.arange(m1 * m0, dtype=float)
    np.testing.assert_array_equal(run(c, sizes, {"K": k})["X"], k.reshape(m1, m0))


def test_missing_size_is_a_shape_error():
    c = Cascade.from_text("input A[M]\nB[m] = A[m]")
    with pytest.raises(ShapeError, match="give a size for M"):
        c.rank_sizes({})
