"""Density-aware op counts: exact counts of the points masks leave, and how they scale with window/density."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workloads
from einsum import regions
from einsum.analysis import (
    effective_op_counts,
    effective_points,
    effective_total_ops,
    iteration_points,
    op_counts,
)
from einsum.cascade import Cascade
from einsum.errors import ShapeError
from einsum.interpreter import run
from workloads import variants

UNMASKED = [
    "attention-3pass",
    "fusemax",
    "gqa",
    "mqa",
    "mla",
    "mla-expanded",
    "linear-attention",
    "sigmoid-attention",
    "softplus-attention",
]
SMALL = {"B": 2, "H": 4, "M": 32, "E": 3, "F": 2, "L": 4, "ER": 2, "HS": 2}


def entry_sizes(name, **given):
    entry = workloads.get_cascade(name)
    return entry.sizes({k: v for k, v in {**SMALL, **given}.items() if k in entry.cascade.ranks})


def qk_macs(cascade, sizes, density=None, scores="QK"):
    return effective_op_counts(cascade, sizes, density)[scores]["mul"]


@pytest.mark.parametrize("name", UNMASKED)
def test_without_masks_effective_counts_are_the_dense_counts(name):
    c = workloads.get_cascade(name).cascade
    sizes = entry_sizes(name)
    assert effective_op_counts(c, sizes) == op_counts(c, sizes)


@pytest.mark.parametrize("name", sorted(workloads.CASCADES))
def test_effective_counts_never_exceed_dense_counts(name):
    c = workloads.get_cascade(name).cascade
    sizes = entry_sizes(name, P=24)
    density = {"BM": 0.5} if "BM" in c.inputs else None
    dense = op_counts(c, sizes)
    for einsum, counts in effective_op_counts(c, sizes, density).items():
        for kind, n in counts.items():
            assert n <= dense[einsum][kind], (einsum, kind)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 300), p=st.integers(1, 300), m0=st.sampled_from([1, 4, 16]))
def test_causal_keeps_the_lower_triangle_exactly(m, p, m0):
    p = min(p, m)
    m = m - m % m0 or m0
    p = min(p, m)
    sizes = {"B": 1, "H": 2, "M": m, "P": p, "E": 3, "F": 1, "M0": m0}
    visible = sum(min(m, q + 1) for q in range(m - p, m))  # query at position q sees keys 0..q
    for name in ("attention-3pass-causal", "fusemax-causal"):
        c = workloads.get_cascade(name).cascade
        ops = effective_op_counts(c, {k: v for k, v in sizes.items() if k in c.ranks})
        assert ops["QK"]["mul"] == 2 * 3 * visible
        assert ops["MQK"] == {"select": 2 * visible}


def test_causal_is_about_half_of_dense_for_m_equal_p():
    sizes = {"B": 1, "H": 1, "M": 4096, "P": 4096, "E": 64, "F": 64, "M0": 256}
    dense = qk_macs(workloads.get_cascade("fusemax").cascade, sizes)
    causal = qk_macs(workloads.get_cascade("fusemax-causal").cascade, sizes)
    assert causal / dense == pytest.approx(0.5, abs=1 / 4096)
    assert causal == 64 * 4096 * 4097 // 2


@settings(max_examples=25, deadline=None)
@given(window=st.integers(1, 40), m=st.integers(1, 200))
def test_halving_the_window_halves_qk_macs_up_to_the_edges(window, m):
    window *= 2
    sizes = {"B": 1, "H": 2, "M": m, "P": m, "E": 3, "F": 1, "M0": 1}
    full = qk_macs(Cascade.from_text(variants.sliding_window(window)), sizes)
    half = qk_macs(Cascade.from_text(variants.sliding_window(window // 2)), sizes)
    banded = lambda w: 2 * 3 * sum(min(w, q + 1) for q in range(m))  # noqa: E731
    assert (full, half) == (banded(window), banded(window // 2))
    # the first positions see fewer than a window of keys: the only departure from exactly half
    assert 0 <= 2 * half - full <= 2 * 3 * (window // 2) ** 2


def test_long_sequence_window_counts_are_linear_in_m():
    c = workloads.get_cascade("sliding-window").cascade
    w = variants.SLIDING_WINDOW
    for m in (1 << 16, 1 << 18):
        sizes = {"B": 1, "H": 1, "M": m, "P": m, "E": 1, "F": 1, "M0": 256}
        assert qk_macs(c, sizes) == m * w - w * (w - 1) // 2


@pytest.mark.parametrize("name", ["block-sparse", "moba"])
@settings(max_examples=10, deadline=None)
@given(density=st.floats(0.0, 1.0), m1=st.integers(1, 6), p1=st.integers(1, 6))
def test_halving_block_density_halves_qk_macs(name, density, m1, p1):
    c = workloads.get_cascade(name).cascade
    sizes = {"B": 1, "H": 2, "M1": m1, "M0": 4, "P1": p1, "P0": 4, "E": 3, "F": 2}
    sizes["M1"] = max(m1, p1)
    full = qk_macs(c, sizes, {"BM": density})
    half = qk_macs(c, sizes, {"BM": density / 2})
    assert half == pytest.approx(full / 2, rel=1e-12, abs=1e-9)
    static = qk_macs(c, sizes)  # no density: every block kept, only the causal mask (moba) applies
    assert full == pytest.approx(density * static, rel=1e-12, abs=1e-9)


def test_block_density_skips_the_whole_masked_chain():
    c = workloads.get_cascade("block-sparse").cascade
    sizes = entry_sizes("block-sparse", M=256, P=256)
    dense, sparse = op_counts(c, sizes), effective_op_counts(c, sizes, {"BM": 0.25})
    for name in ("LB", "QK", "MQK", "LM", "PS", "LL", "PV"):  # the mask and every per-score Einsum
        assert sparse[name] == {k: 0.25 * n for k, n in dense[name].items()}, name
    for name in ("RM", "C", "RL", "RO", "AV"):  # per tile or per query: not skipped
        assert sparse[name] == dense[name], name


def test_density_is_checked():
    c = workloads.get_cascade("block-sparse").cascade
    sizes = entry_sizes("block-sparse")
    with pytest.raises(ShapeError, match="density given for 'MASK', which is not an input; its inputs are Q, K, V, BM"):
        effective_points(c, sizes, {"MASK": 0.5})
    with pytest.raises(ShapeError, match=r"density of BM must lie in \[0, 1\], got 1.5"):
        effective_points(c, sizes, {"BM": 1.5})


def keep_counts(keep):
    return int(np.count_nonzero(keep))


def test_masked_variants_count_exactly_the_visible_scores():
    m, p = 48, 40
    mm, q = np.arange(m)[:, None], np.arange(p)[None, :] + m - p
    cases = {
        "sliding": (variants.sliding_window(7), (mm <= q) & (mm > q - 7), 1),
        "streaming": (variants.streaming_llm(3, 5), (mm <= q) & ((mm > q - 5) | (mm < 3)), 1),
    }
    for text, keep, heads in cases.values():
        c = Cascade.from_text(text)
        sizes = {"B": 1, "H": heads, "M": m, "P": p, "E": 5, "F": 1, "M0": 8}
        assert qk_macs(c, sizes) == 5 * keep_counts(keep)
    duo = Cascade.from_text(variants.duo_attention(3, 5))
    sizes = {"B": 1, "H": 2, "HS": 3, "M": m, "P": p, "E": 5, "F": 1, "M0": 8}
    assert qk_macs(duo, sizes) == 2 * 5 * keep_counts(mm <= q)
    assert qk_macs(duo, sizes, scores="QKS") == 3 * 5 * keep_counts((mm <= q) & ((mm > q - 5) | (mm < 3)))


def test_s2_counts_the_strided_shards_and_local_blocks():
    hg, hn, n, m0, m1, local = 2, 4, 4, 8, 4, 2
    m = m1 * n * m0
    mm, q = np.arange(m)[:, None], np.arange(m)[None, :]
    kb, qb = mm // m0, q // m0
    keep = sum(keep_counts((mm <= q) & ((kb % n == h % hn) | (kb > qb - local))) for h in range(hg * hn))
    sizes = {"B": 1, "HG": hg, "HN": hn, "N": n, "M0": m0, "M": m, "P": m, "E": 3, "F": 1}
    assert qk_macs(Cascade.from_text(variants.s2_attention(local)), sizes) == 3 * keep


def test_causal_linear_attention_counts_the_chunked_algorithm():
    c = workloads.get_cascade("linear-attention-causal").cascade
    B, H, M, M0, E, F = 1, 2, 64, 8, 3, 2
    sizes = {"B": B, "H": H, "M": M, "P": M, "E": E, "F": F, "M0": M0}
    ops, dense = effective_op_counts(c, sizes), op_counts(c, sizes)
    assert ops["QK"]["mul"] == B * H * E * (M // M0) * M0 * (M0 + 1) // 2  # causal inside each chunk
    assert ops["XN"]["mul"] == B * H * M * F * E  # one chunk state per query
    assert dense["XN"]["mul"] == B * H * (M // M0) * M * F * E
    assert ops["KV"] == dense["KV"] and ops["S"] == dense["S"]  # the state update is dense


def test_split_k_decode_counts_every_split():
    c = workloads.get_cascade("decode-splitk").cascade
    sizes = workloads.get_cascade("decode-splitk").sizes({"M": 4096})
    assert effective_op_counts(c, sizes) == op_counts(c, sizes)  # one query sees the whole cache
    sizes = workloads.get_cascade("decode-splitk").sizes({"M": 4096, "P": 4, "S": 4})
    select = effective_op_counts(c, sizes)["MQK"]["select"]
    assert select == 2 * 4 * (4 * 4096 - 6) == iteration_points(c.einsum_by_name["MQK"], sizes) - 2 * 4 * 6


def test_total_ops_sum_the_einsums():
    c = workloads.get_cascade("moba").cascade
    sizes = entry_sizes("moba", M=64)
    per = effective_op_counts(c, sizes, {"BM": 0.5})
    assert effective_total_ops(c, sizes, {"BM": 0.5})["mul"] == sum(x.get("mul", 0) for x in per.values())


# -- the counting itself, against brute force on random conditions ---------------------------------------------

terms = st.sampled_from(["m1*M0+m0", "m1*M0+m0", "m0", "m1", "p", "n", "2*n", "3*p", "P - 1", "M", "m1*M0+m0 + n"])
comparisons = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])


@st.composite
def conditions(draw, depth=2):
    if depth == 0 or draw(st.booleans()):
        return f"{draw(terms)} {draw(comparisons)} {draw(terms)} + {draw(st.integers(0, 5))}"
    return draw(st.tuples(conditions(depth - 1), conditions(depth - 1), st.sampled_from(["and", "or"])))


def where_of(cond, then, otherwise):
    if isinstance(cond, str):
        return f"where({cond}, {then}, {otherwise})"
    a, b, how = cond
    if how == "and":
        return where_of(a, where_of(b, then, otherwise), otherwise)
    return where_of(a, then, where_of(b, then, otherwise))


@settings(max_examples=60, deadline=None)
@given(
    cond=conditions(), m1=st.integers(1, 4), m0=st.integers(1, 4), p=st.integers(1, 9), n=st.integers(1, 5),
    chunk=st.sampled_from([3, 1 << 18]),
)  # fmt: skip
def test_counting_matches_brute_force(cond, m1, m0, p, n, chunk):
    # covers the merged m1*M0+m0, a variable summed out through its one comparison (n), and chunked rows
    text = f"input X[M,P,N]\npartition M = M1 * M0\nY[m1,m0,p,n] = {where_of(cond, 'X[m1*M0+m0,p,n]', '0')}"
    c = Cascade.from_text(text)
    sizes = {"M1": m1, "M0": m0, "P": p, "N": n}
    kept = run(c, sizes, {"X": np.ones((m1 * m0, p, n))})["Y"]
    saved = regions._COUNT_CHUNK
    regions._count_own.cache_clear()
    try:
        regions._COUNT_CHUNK = chunk
        assert effective_points(c, sizes)["Y"] == np.count_nonzero(kept)
    finally:
        regions._COUNT_CHUNK = saved
