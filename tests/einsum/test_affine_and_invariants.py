"""Issue 16: any affine index whose range stays inside its rank (``BK[b,h,m1*M0+M0-1]``, the last key of each
block) is accepted and evaluated; and a loop-invariant subexpression is counted once per point of the variables
it depends on, so two spellings of one computation count the same operations."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workloads
from einsum.analysis import effective_op_counts, op_counts, operator_nodes, pass_analysis, total_ops
from einsum.cascade import Cascade
from einsum.errors import CascadeError, ShapeError
from einsum.interpreter import run
from einsum.lower import lower
from tests.einsum.test_analysis_density import conditions, where_of

# -- affine indices ---------------------------------------------------------------------------------------------

# The decay from each key to the end of its block (the chunked form of gated linear attention): the last key of
# block m1 is BK[b,h,m1*M0+M0-1].
BLOCK_END = """input BK[B,H,M], V[B,H,F,M]
partition M = M1 * M0
D[b,h,m1,m0] = exp(BK[b,h,m1*M0+M0-1] - BK[b,h,m1*M0+m0])
S[b,h,f,m1] = sum[m0] D[b,h,m1,m0] * V[b,h,f,m1*M0+m0]
L[b,h,m1] = BK[b,h,m1*M0+M0-1]
output S, L
"""


def block_end_reference(bk, v, m0):
    b, h, m = bk.shape
    blocks = bk.reshape(b, h, m // m0, m0)
    d = np.exp(blocks[..., -1:] - blocks)
    return np.einsum("bhij,bhfij->bhfi", d, v.reshape(b, h, v.shape[2], m // m0, m0)), blocks[..., -1]


@pytest.mark.parametrize(("m", "m0"), [(12, 4), (12, 1), (12, 12), (7, 7)])
def test_last_key_of_each_block_matches_numpy(m, m0):
    c = Cascade.from_text(BLOCK_END, name="block-end")
    sizes = {"B": 2, "H": 3, "F": 2, "M": m, "M0": m0}
    rng = np.random.default_rng(m * 100 + m0)
    bk, v = rng.standard_normal((2, 3, m)), rng.standard_normal((2, 3, 2, m))
    out = run(c, sizes, {"BK": bk, "V": v})
    s, last = block_end_reference(bk, v, m0)
    np.testing.assert_allclose(out["S"], s, rtol=1e-12)
    np.testing.assert_array_equal(out["L"], last)


def test_last_key_of_each_block_lowers_and_analyses():
    c = Cascade.from_text(BLOCK_END, name="block-end")
    sizes = {"B": 2, "H": 3, "F": 2, "M": 12, "M0": 4}
    lowered = lower(c, sizes).einsum("L")
    used = dict(zip(lowered.vars, lowered.incidence[lowered.tensors.index("BK")], strict=True))
    assert used == {"b": True, "h": True, "m1": True}  # one key per block: BK indexed by b, h, m1
    assert op_counts(c, sizes)["D"] == {"exp": 2 * 3 * 12, "sub": 2 * 3 * 12}
    assert effective_op_counts(c, sizes) == op_counts(c, sizes)
    assert pass_analysis(c).passes == 1


def gather(index: str, names: dict[str, int], table: np.ndarray, out_vars: list[str]) -> np.ndarray:
    """The independent reference: ``table[index]`` at every point of ``out_vars``, the index evaluated by
    Python on the variables' and sizes' values."""
    shape = [names[v.upper()] for v in out_vars]
    out = np.empty(shape)
    for point in itertools.product(*(range(n) for n in shape)):
        out[point] = table[eval(index, {}, {**names, **dict(zip(out_vars, point, strict=True))})]
    return out


@pytest.mark.parametrize(
    "index",
    [
        "m1*M0+M0-1",  # the last element of block m1
        "m1*M0+m0",  # the partition's own layout
        "m0*M1+m1",  # blocks read transposed
        "M-1-(m1*M0+m0)",  # reversed
        "m1+m0",  # overlapping windows
        "M0-1",  # a constant
        "M-1-m0",
    ],
)
def test_affine_indices_over_partition_parts_match_python(index):
    c = Cascade.from_text(f"input K[M]\npartition M = M1 * M0\nX[m1,m0] = K[{index}]")
    sizes = c.rank_sizes({"M1": 3, "M0": 4})
    k = np.arange(12.0) * 1.5 + 1
    np.testing.assert_array_equal(run(c, sizes, {"K": k})["X"], gather(index, sizes, k, ["m1", "m0"]))


def signed(terms: list[tuple[int, str]]) -> str:
    """``0 + 2*m1 - 3*m0 + 1*M0 - 4`` from (coefficient, atom) pairs (the index grammar has no unary minus)."""
    text = "0"
    for coef, atom in terms:
        text += f" {'-' if coef < 0 else '+'} {abs(coef)}{'*' + atom if atom else ''}"
    return text


@settings(max_examples=120, deadline=None)
@given(
    a=st.integers(-3, 3), b=st.integers(-3, 3), c=st.integers(-1, 2), d=st.integers(-4, 6),
    m1=st.integers(1, 4), m0=st.integers(1, 4),
)  # fmt: skip
def test_affine_index_is_accepted_exactly_when_its_range_fits(a, b, c, d, m1, m0):
    index = signed([(a, "m1"), (b, "m0"), (c, "M0"), (d, "")])
    cascade = Cascade.from_text(f"input K[M]\npartition M = M1 * M0\nX[m1,m0] = K[{index}]")
    values = [a * i + b * j + c * m0 + d for i in range(m1) for j in range(m0)]
    lo, hi, size = min(values), max(values), m1 * m0
    if lo >= 0 and hi < size:
        sizes = cascade.rank_sizes({"M1": m1, "M0": m0})
        k = np.arange(size, dtype=float) + 10
        np.testing.assert_array_equal(run(cascade, sizes, {"K": k})["X"], gather(index, sizes, k, ["m1", "m0"]))
    else:
        with pytest.raises(ShapeError) as info:
            cascade.rank_sizes({"M1": m1, "M0": m0})
        message = str(info.value)
        assert f"spans {lo}..{hi} but K has {size} elements along M" in message
        assert f"indices 0..{size - 1}" in message and f"M0={m0}" in message


@pytest.mark.parametrize(
    ("index", "fragment"),
    [
        ("m1*M0+M0", "index m1*M0+M0 of BK spans 4..12 but BK has 12 elements along M (indices 0..11; M=12, M0=4"),
        ("m1*M0+m0+1", "index m1*M0+m0+1 of BK spans 1..12 but BK has 12 elements along M"),
        ("m1*M0+m0-1", "spans -1..10"),
        ("M0-2-m0", "index M0-2-m0 of BK spans -1..2"),
    ],
)
def test_out_of_range_affine_index_is_refused_with_its_range(index, fragment):
    text = BLOCK_END.replace("BK[b,h,m1*M0+M0-1] -", f"BK[b,h,{index}] -")  # in D only
    c = Cascade.from_text(text, name="block-end")
    with pytest.raises(ShapeError) as info:
        c.rank_sizes({"B": 1, "H": 1, "F": 1, "M": 12, "M0": 4})
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("X[m1,m0] = K[m1*m0]", "index 'm1*m0' multiplies variables m0 and m1"),
        ("X[m1,m0] = K[m1*(m0+1)]", "multiplies variables m0 and m1"),
        ("X[m1,m0] = where(m1*m0 < 3, K[m0], 0)", "index 'm1*m0' multiplies variables"),
        ("X[m1,p] = K[m1*M0+p]", "mixes variables of unrelated ranks ['M1', 'P']"),
        ("X[p] = K[p]", "K has rank M at position 1, but the index 'p' walks rank P"),
        ("X[m1,m0] = R[m1*M0+m0]", "R has rank M0 at position 1, but the index 'm1*M0+m0' walks rank M"),
        ("X[m1] = R[m1]", "R has rank M0 at position 1, but the index 'm1' walks rank M1"),
    ],
)
def test_index_that_is_not_affine_or_walks_another_rank_is_refused(line, fragment):
    with pytest.raises(CascadeError) as info:
        Cascade.from_text(f"input K[M], P0[P], R[M0]\npartition M = M1 * M0\n{line}\nY[p] = P0[p]\nZ[m0] = R[m0]")
    assert fragment in str(info.value)


# -- loop-invariant subexpressions --------------------------------------------------------------------------------

SIZES = {"M": 5, "P": 3, "E": 4}


def sized(c: Cascade) -> dict[str, int]:
    return {r: n for r, n in SIZES.items() if r in c.ranks}


def counts_of(text: str) -> dict[str, int]:
    c = Cascade.from_text(text)
    return total_ops(c, sized(c))


def test_hoisted_map_counts_as_its_own_einsum():
    inline = "input A[M,P], B[P]\nY[m,p] = A[m,p] * exp(B[p])"
    split = "input A[M,P], B[P]\nEB[p] = exp(B[p])\nY[m,p] = A[m,p] * EB[p]"
    assert counts_of(inline) == counts_of(split) == {"exp": 3, "mul": 15}


def test_scale_counts_where_it_is_applied():
    # the spelling: the constant 1/8 is one division, not one per point of the M*P*E space
    scaled = "input Q[E,P], K[E,M]\nZ[m,p] = sum[e] Q[e,p] * K[e,m] * (1/8)"
    assert counts_of(scaled) == {"add": 60, "div": 1, "mul": 120}
    # scaling Q once per element, inline or as its own Einsum, is E*P divisions either way
    inline = "input Q[E,P], K[E,M]\nZ[m,p] = sum[e] (Q[e,p] / 8) * K[e,m]"
    split = "input Q[E,P], K[E,M]\nQS[e,p] = Q[e,p] / 8\nZ[m,p] = sum[e] QS[e,p] * K[e,m]"
    assert counts_of(inline) == counts_of(split) == {"add": 60, "div": 12, "mul": 60}


def test_lowering_keeps_ops_per_point_of_the_nest():
    c = Cascade.from_text("input A[M,P], B[P]\nY[m,p] = A[m,p] * exp(B[p])")
    assert lower(c, sized(c)).einsum("Y").ops_per_point == {"mul": 1, "exp": 1}


def test_registered_cascade_with_an_invariant_term():
    # linear-attention-causal's AV divides by DX + DI, which does not depend on f: B*H*P adds, not B*H*F*P
    c = workloads.get_cascade("linear-attention-causal").cascade
    sizes = {"B": 2, "H": 2, "E": 4, "F": 8, "M": 16, "P": 16, "M0": 4}
    av = op_counts(c, sizes)["AV"]
    assert av == {"div": 2 * 2 * 8 * 16, "add": 2 * 2 * 8 * 16 + 2 * 2 * 16}
    assert effective_op_counts(c, sizes)["AV"] == av


def test_hoisted_node_under_a_mask_counts_the_points_that_need_it():
    c = Cascade.from_text("input A[M,P], B[P]\nY[m,p] = where(m <= p - 2, A[m,p] * exp(B[p]), 0)")
    sizes = {"M": 4, "P": 6}
    kept = [(m, p) for m in range(4) for p in range(6) if m <= p - 2]
    counts = effective_op_counts(c, sizes)["Y"]
    assert counts["exp"] == len({p for _, p in kept}) == 4  # p = 2..5
    assert counts["mul"] == counts["select"] == len(kept)


VARS = ("m", "p", "e")
RANK_OF = {v: v.upper() for v in VARS}


@st.composite
def expressions(draw, depth=3):
    """A random expression over accesses of inputs indexed by random nonempty subsets of m, p, e."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        used = draw(st.lists(st.sampled_from(VARS), min_size=1, max_size=3, unique=True))
        used = [v for v in VARS if v in used]
        return ("acc", tuple(used))
    kind = draw(st.sampled_from(["+", "-", "*", "exp", "neg", "max"]))
    if kind in ("exp", "neg"):
        return (kind, draw(expressions(depth - 1)))
    return (kind, draw(expressions(depth - 1)), draw(expressions(depth - 1)))


def node_vars(node) -> tuple[str, ...]:
    if node[0] == "acc":
        return node[1]
    found = set().union(*(node_vars(child) for child in node[1:]))
    return tuple(v for v in VARS if v in found)


class Spelling:
    """An expression written out; with ``split``, every maximal operator subtree that does not depend on all of
    ``full`` goes into an Einsum of its own over the variables it depends on (``einsums``, shared)."""

    def __init__(self, full: tuple[str, ...], split: bool, einsums: list[str] | None = None):
        self.full, self.split = full, split
        self.einsums: list[str] = [] if einsums is None else einsums

    def text(self, node, top: bool = True) -> str:
        if node[0] == "acc":
            return f"I{''.join(node[1]).upper()}[{','.join(node[1])}]"
        used = node_vars(node)
        if self.split and top and set(used) != set(self.full):
            body = Spelling(used, True, self.einsums).text(node, top=False)
            name = f"T{len(self.einsums)}"
            self.einsums.append(f"{name}[{','.join(used)}] = {body}")
            return f"{name}[{','.join(used)}]"
        args = [self.text(child) for child in node[1:]]
        if node[0] in ("exp", "max"):
            return f"{node[0]}({', '.join(args)})"
        if node[0] == "neg":
            return f"-({args[0]})"
        return f"({args[0]} {node[0]} {args[1]})"


def leaves(node):
    if node[0] == "acc":
        yield node[1]
    else:
        for child in node[1:]:
            yield from leaves(child)


@settings(max_examples=80, deadline=None)
@given(expressions(), st.booleans(), st.integers(0, 1000))
def test_two_spellings_count_the_same_and_compute_the_same(expr, reduce, seed):
    used = node_vars(expr)
    out = tuple(v for v in used if not (reduce and v == "e")) or used
    reduced = tuple(v for v in used if v not in out)
    head = f"Y[{','.join(out)}] = " + (f"sum[{','.join(reduced)}] " if reduced else "")
    inputs = sorted(set(leaves(expr)))
    decl = "input " + ", ".join(f"I{''.join(v).upper()}[{','.join(RANK_OF[x] for x in v)}]" for v in inputs)
    inline = Spelling(used, split=False)
    split = Spelling(used, split=True)
    one = Cascade.from_text(f"{decl}\n{head}{inline.text(expr, top=False)}")
    body = split.text(expr, top=False)  # the root depends on all of Y's variables: it stays in Y
    two = Cascade.from_text("\n".join([decl, *split.einsums, head + body]))
    sizes = sized(one)
    assert total_ops(one, sizes) == total_ops(two, sizes)
    assert effective_op_counts(one, sizes) == op_counts(one, sizes)
    rng = np.random.default_rng(seed)
    arrays = {f"I{''.join(v).upper()}": rng.uniform(-1, 1, [SIZES[RANK_OF[x]] for x in v]) for v in inputs}
    np.testing.assert_allclose(run(two, sizes, arrays)["Y"], run(one, sizes, arrays)["Y"], rtol=1e-12, atol=1e-12)


def test_operator_nodes_group_nodes_by_the_variables_they_depend_on():
    c = Cascade.from_text("input A[M,P], B[P], C[M]\nY[m,p] = A[m,p] * exp(B[p]) * exp(C[m]) * exp(B[p])")
    assert operator_nodes(c.einsums[0]) == (("mul", ((("m", "p"), 3),)), ("exp", ((("p",), 2), (("m",), 1))))
    assert total_ops(c, sized(c)) == {"exp": 2 * 3 + 5, "mul": 3 * 15}


@settings(max_examples=60, deadline=None)
@given(cond=conditions(), m1=st.integers(1, 4), m0=st.integers(1, 4), p=st.integers(1, 9), n=st.integers(1, 5))
def test_hoisted_node_under_random_masks_counts_the_points_that_need_it(cond, m1, m0, p, n):
    # exp(B[p]) is needed at the p of some kept point: exactly that many for one comparison (but ==, whose
    # dropped side may step over the value), at most P and never fewer than needed for any condition
    body = where_of(cond, "X[m1*M0+m0,p,n] * exp(B[p])", "0")
    c = Cascade.from_text(f"input X[M,P,N], B[P]\npartition M = M1 * M0\nY[m1,m0,p,n] = {body}")
    sizes = {"M1": m1, "M0": m0, "P": p, "N": n}
    kept = run(c, sizes, {"X": np.ones((m1 * m0, p, n)), "B": np.zeros(p)})["Y"] != 0
    needed = int(np.count_nonzero(kept.any(axis=(0, 1, 3))))
    counts, copies = effective_op_counts(c, sizes)["Y"], body.count("exp(")  # an `or` repeats the branch
    assert counts["mul"] == copies * np.count_nonzero(kept)
    assert copies * needed <= counts["exp"] <= copies * p
    if isinstance(cond, str) and " == " not in cond:
        assert counts["exp"] == needed
